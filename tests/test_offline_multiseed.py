"""Multi-seed TD3+BC (slate_rl.offline.multiseed): the maths of TD3BC.update per seed, random streams that
depend neither on the number of seeds nor on the neighbours (and are the single-seed loop's), seeds trained
together that agree with single-seed training, single-seed policy files and resume checkpoints, resume of
the group."""

from __future__ import annotations

import copy

import pytest
import torch
from scipy import stats
from test_offline_loop import arrays, expert, sim, stage_inputs  # noqa: F401  (fixtures of the stage test)

from slate_rl.core.errors import ConfigError
from slate_rl.core.io import read_resume_checkpoint
from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.models.belief import BeliefEncoder
from slate_rl.offline.base import Normalizer
from slate_rl.offline.config import OfflineConfig, TD3BCConfig
from slate_rl.offline.loop import DivergenceError, prepare_buffer, sample_batch, train_offline
from slate_rl.offline.multiseed import StackedTD3BC, noise_generator, stack_batches, train_offline_seeds
from slate_rl.offline.policy import load_policy, save_policy
from slate_rl.offline.registry import make_algo
from slate_rl.offline.td3bc import TD3BC

OBS, ACT, HORIZON, EPISODES = 6, 3, 10, 40
CENTER, SCALE = torch.tensor([0.5, -1.0, 0.0]), torch.tensor([1.0, 2.0, 0.5])
SMALL = TD3BCConfig(hidden=16)
CFG = OfflineConfig(total_steps=12, batch_size=32, eval_interval=4, checkpoint_interval=4, log_interval=2, gamma=0.8)


def _algo(seed: int, name: str = "td3bc", cfg: TD3BCConfig = SMALL, dtype=torch.float32) -> TD3BC:
    torch.manual_seed(seed)  # as train-offline builds seed s's algorithm
    algo = make_algo(name, OBS, CENTER, SCALE, 0.8, CFG.total_steps, {name: cfg})
    return algo.to(dtype)  # type: ignore[return-value]


def _best_action(obs: torch.Tensor) -> torch.Tensor:
    """The reward's optimum: a fixed function of the state inside the action box."""
    return CENTER + SCALE * torch.tanh(obs[..., :ACT] - obs[..., ACT:])


def _buffer(seed: int = 0) -> EpisodeBuffer:
    """A synthetic dataset: random states, noisy near-optimal actions, reward -|a - a*(s)|^2."""
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(EPISODES, HORIZON + 1, OBS, generator=g)
    actions = (_best_action(states[:, :-1]) + 0.5 * SCALE * torch.randn(EPISODES, HORIZON, ACT, generator=g))
    actions = torch.maximum(torch.minimum(actions, CENTER + SCALE), CENTER - SCALE)
    rewards = -((actions - _best_action(states[:, :-1])) / SCALE).square().sum(-1)
    buf = EpisodeBuffer(EPISODES, HORIZON, 2, ACT, extras={"observations": (OBS,), "next_observations": (OBS,)})
    buf.add({"slates": torch.zeros(EPISODES, HORIZON + 1, 2, dtype=torch.int64),
             "clicks": torch.zeros(EPISODES, HORIZON + 1, 2, dtype=torch.bool), "actions": actions,
             "rewards": rewards, "observations": states[:, :-1], "next_observations": states[:, 1:]})
    prepare_buffer(buf, Normalizer(OBS), True)
    return buf


HELD_OUT = torch.randn(256, OBS, generator=torch.Generator().manual_seed(99))


def _score(algo: TD3BC) -> float:
    """The validation: mean reward of the policy's actions on held-out states."""
    return float(-((algo.act(HELD_OUT) - _best_action(HELD_OUT)) / SCALE).square().sum(-1).mean())


def _assert_state_close(a: dict, b: dict, rtol: float, atol: float) -> None:
    assert a["modules"].keys() == b["modules"].keys() and a["schedulers"] == b["schedulers"]
    for k in a["modules"]:
        torch.testing.assert_close(a["modules"][k], b["modules"][k], rtol=rtol, atol=atol, msg=k)
    for name in a["optimizers"]:
        sa, sb = a["optimizers"][name], b["optimizers"][name]
        assert sa["param_groups"] == sb["param_groups"] and sa["state"].keys() == sb["state"].keys(), name
        for idx in sa["state"]:
            for k in sa["state"][idx]:
                torch.testing.assert_close(sa["state"][idx][k], sb["state"][idx][k], rtol=rtol, atol=atol,
                                           msg=f"{name}.{idx}.{k}")


def _train(seeds, path, cfg=CFG, validate=None, fingerprints=None, algo_cfg=SMALL):
    algos = [_algo(s, cfg=algo_cfg) for s in seeds]
    out = train_offline_seeds(algos, _buffer(), cfg, seeds, validate or (lambda i: _score(algos[i])),
                              [path / f"seed{s}.last.ckpt" for s in seeds], progress=False, fingerprints=fingerprints)
    return algos, out


# ---------------------------------------------------------------------------------------------- the maths
@pytest.mark.parametrize("num_seeds", [1, 3])
def test_each_seed_of_a_stacked_update_is_td3bc_update(num_seeds):
    """Five updates of the stacked algorithm (actor steps at 2 and 4: the delayed actor and targets) equal, seed by
    seed, TD3BC.update on the same batches in float64 with torch's global generator seeded as the single-seed loop
    seeds it: metrics, networks, targets, Adam moments and counters."""
    seeds = [5, 6, 7][:num_seeds]
    algos = [_algo(s, dtype=torch.float64) for s in seeds]
    refs = [copy.deepcopy(a) for a in algos]
    stacked = StackedTD3BC(algos, [noise_generator(s) for s in seeds])
    buf = _buffer()
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    batches = [[{k: v.double() for k, v in sample_batch(buf, CFG, g).items()} for g in gens] for _ in range(5)]
    got = [stacked.update(stack_batches(b)) for b in batches]
    assert got[0]["actor_loss"].shape == (num_seeds,) and torch.all(got[0]["actor_loss"] == 0)
    for i, (ref, seed) in enumerate(zip(refs, seeds, strict=True)):
        torch.manual_seed(seed)
        for step, b in enumerate(batches):
            expected = ref.update(b[i])
            assert got[step].keys() == expected.keys()
            for k in expected:
                assert float(got[step][k][i]) == pytest.approx(float(expected[k]), rel=1e-10, abs=1e-12), (step, k)
        _assert_state_close(stacked.seed_state_dict(i), ref.state_dict(), rtol=1e-10, atol=1e-12)
        assert int(ref.updates) == 5 == int(stacked.updates)
    # the actor and its target moved at the actor steps only
    assert not torch.equal(stacked.actor_target[0].weight, torch.stack([a.actor_target[0].weight for a in algos]))


def test_the_critic_gets_no_gradient_from_the_actor_loss():
    stacked = StackedTD3BC([_algo(s) for s in (0, 1)], [noise_generator(s) for s in (0, 1)])
    batch = stack_batches([sample_batch(_buffer(), CFG, torch.Generator().manual_seed(s)) for s in (0, 1)])
    stacked.actor_loss(batch).sum().backward()
    assert all(p.grad is None for p in stacked.critic.parameters())
    assert all(p.grad is not None for p in stacked.actor.parameters())


def test_bad_input_is_one_clear_error(tmp_path):
    bc = _algo(0, "bc", cfg=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="supports td3bc, not bc"):
        train_offline_seeds([bc], _buffer(), CFG, [0], lambda i: 0.0, [tmp_path / "a"], progress=False)
    with pytest.raises(ConfigError, match="distinct seeds"):
        train_offline_seeds([_algo(0), _algo(0)], _buffer(), CFG, [0, 0], lambda i: 0.0,
                            [tmp_path / "a", tmp_path / "b"], progress=False)
    with pytest.raises(ConfigError, match="one configuration"):
        StackedTD3BC([_algo(0), _algo(1, cfg=TD3BCConfig(hidden=16, alpha=1.0))], [noise_generator(0)] * 2)


# ---------------------------------------------------------------------------------------------- training
def test_a_seed_alone_equals_the_same_seed_among_others(tmp_path):
    """Seed 1 alone, among 0, 1, 2 and among 5, 1, 7: the same batches and noise, so the same metrics, learning
    curve and final networks (up to float rounding: the batched matmuls may round differently)."""
    alone_algos, alone = _train([1], tmp_path / "alone")
    group_algos, group = _train([0, 1, 2], tmp_path / "group")
    other_algos, other = _train([5, 1, 7], tmp_path / "other")
    for algos, states, i in ((group_algos, group, 1), (other_algos, other, 1)):
        st, ref = states[i], alone[0]
        assert not isinstance(st, DivergenceError) and not isinstance(ref, DivergenceError)
        assert st.step == ref.step == CFG.total_steps
        assert [s for s, _ in st.curve] == [s for s, _ in ref.curve] == [4, 8, 12]
        assert [v for _, v in st.curve] == pytest.approx([v for _, v in ref.curve], rel=1e-5, abs=1e-6)
        assert st.metrics.keys() == ref.metrics.keys()
        for k in ref.metrics:
            assert st.metrics[k] == pytest.approx(ref.metrics[k], rel=1e-4, abs=1e-5), k
        _assert_state_close(algos[i].state_dict(), alone_algos[0].state_dict(), rtol=1e-4, atol=1e-5)
    assert not torch.equal(group_algos[0].actor[0].weight, group_algos[1].actor[0].weight)


def test_a_seed_in_the_group_follows_its_single_seed_run(tmp_path):
    """The group draws each seed's batches and target noise from the streams ``train_offline`` uses, so seed s
    trained together ends where ``train-offline --seed s`` ends, up to float rounding."""
    seeds = [3, 4]
    algos, group = _train(seeds, tmp_path)
    for i, s in enumerate(seeds):
        single = _algo(s)
        state = train_offline(single, _buffer(), CFG, s, lambda a=single: _score(a), tmp_path / f"single{s}.ckpt",
                              progress=False)
        g = group[i]
        assert not isinstance(g, DivergenceError)
        assert [v for _, v in g.curve] == pytest.approx([v for _, v in state.curve], rel=1e-5, abs=1e-6)
        _assert_state_close(algos[i].state_dict(), single.state_dict(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_seeds_trained_together_agree_statistically_with_single_seed_training(tmp_path):
    """The independence test: 8 seeds trained together and 8 other seeds trained one by one by ``train_offline``
    (so no pairing by shared streams) give final scores and validation curves that a Welch test cannot tell
    apart, and the seeds trained together are as spread as those trained alone."""
    cfg = OfflineConfig(total_steps=300, batch_size=64, eval_interval=100, checkpoint_interval=300, log_interval=50)
    together_seeds, alone_seeds = list(range(10, 18)), list(range(20, 28))
    algos, group = _train(together_seeds, tmp_path, cfg)
    together = [_score(a) for a in algos]
    alone, curves = [], []
    for s in alone_seeds:
        algo = _algo(s)
        st = train_offline(algo, _buffer(), cfg, s, lambda a=algo: _score(a), tmp_path / f"a{s}.ckpt", progress=False)
        alone.append(_score(algo))
        curves.append(st.curve)
    assert stats.ttest_ind(together, alone, equal_var=False).pvalue > 0.01, (together, alone)
    assert stats.levene(together, alone).pvalue > 0.01, (together, alone)
    for j in range(3):
        a = [st.curve[j][1] for st in group if not isinstance(st, DivergenceError)]
        b = [c[j][1] for c in curves]
        assert len(a) == 8 and stats.ttest_ind(a, b, equal_var=False).pvalue > 0.01, (j, a, b)
    assert len(set(together)) == 8  # the seeds differ
    assert together[-1] > _score(_algo(17))  # and learnt


def test_per_seed_policy_files_load_and_act_like_single_seed_ones(tmp_path):
    seeds = [3, 4]
    algos, _ = _train(seeds, tmp_path)
    normalizer = Normalizer(OBS)
    normalizer.mean.fill_(0.1)
    encoder = BeliefEncoder(20, 2, 2, OBS)
    stacked = StackedTD3BC(algos, [noise_generator(s) for s in seeds])
    obs = torch.randn(len(seeds), 5, OBS)
    actions = stacked.act(obs)
    for i, s in enumerate(seeds):
        path = tmp_path / f"seed{s}.pt"
        save_policy(path, algos[i], normalizer, encoder, {"seed": s})
        fresh, norm, enc = _algo(100 + s), Normalizer(OBS), BeliefEncoder(20, 2, 2, OBS)
        assert load_policy(path, fresh, norm, enc) == {"seed": s}
        assert torch.equal(norm.mean, normalizer.mean)
        torch.testing.assert_close(fresh.act(obs[i]), actions[i], rtol=1e-5, atol=1e-6)
        for (k, p), (_, q) in zip(fresh.state_dict()["modules"].items(), algos[i].state_dict()["modules"].items(),
                                  strict=True):
            assert torch.equal(p, q), k
        # the resume checkpoint is a single-seed one
        last = torch.load(tmp_path / f"seed{s}.last.ckpt", weights_only=True)
        assert {"algo", "step", "curve", "metrics", "diagnostics", "torch_rng", "sample_rng", "fingerprint"} == \
            last.keys()
        assert int(last["step"]) == CFG.total_steps


def test_a_killed_group_resumes_to_the_same_result(tmp_path):
    seeds = [0, 1]
    straight_algos, straight = _train(seeds, tmp_path / "a", fingerprints=["f0", "f1"])
    calls = []

    def killing(i):
        calls.append(i)
        if len(calls) == 3:  # step 8's validation, after step 4's checkpoints
            raise KeyboardInterrupt
        return 1.0

    with pytest.raises(KeyboardInterrupt):
        _train(seeds, tmp_path / "b", validate=killing, fingerprints=["f0", "f1"])
    resumed_algos, resumed = _train(seeds, tmp_path / "b", fingerprints=["f0", "f1"])
    for i in range(2):
        s, r = straight[i], resumed[i]
        assert not isinstance(s, DivergenceError) and not isinstance(r, DivergenceError)
        assert r.curve[1:] == s.curve[1:] and r.step == s.step
        _assert_state_close(straight_algos[i].state_dict(), resumed_algos[i].state_dict(), rtol=0, atol=0)
    # a seed's group checkpoint at step 4 resumes as a single-seed run, which follows the group's seed
    (tmp_path / "c").mkdir()
    short = OfflineConfig(**{**CFG.__dict__, "total_steps": 4})
    _train(seeds, tmp_path / "c", short, fingerprints=["f0", "f1"])
    single = _algo(1)
    state = train_offline(single, _buffer(), CFG, 1, lambda: _score(single), tmp_path / "c" / "seed1.last.ckpt",
                          progress=False, fingerprint="f1")
    assert [st for st, _ in state.curve] == [4, 8, 12]
    _assert_state_close(single.state_dict(), straight_algos[1].state_dict(), rtol=1e-4, atol=1e-5)
    # one seed's checkpoint from other settings: the whole group starts over (and ends as a straight run)
    _, restarted = _train(seeds, tmp_path / "b", fingerprints=["f0", "other"])
    assert [st.curve for st in restarted] == [st.curve for st in straight]  # type: ignore[union-attr]


@pytest.mark.parametrize(("algo", "validation", "steps"), [pytest.param("td3bc", 2, [4, 4], id="td3bc"),
                                                            pytest.param("bc", 3, [12, 4], id="bc")])
def test_a_killed_seed_group_reruns_to_the_bytes_of_the_uninterrupted_group(stage_inputs, kill_at_call,  # noqa: F811
                                                                            capsys, algo, validation, steps):
    """`train-offline --seeds 0,1` killed mid-run, then rerun: every seed writes the policy file and results JSON of
    the uninterrupted group, byte for byte. TD3+BC (seeds stacked) is killed at seed 1's validation of step 6, both
    seeds after their checkpoint of step 4; BC (seeds one after another) at seed 1's first validation, seed 0 trained
    and written (its rerun resumes at the last step and only tests), seed 1 after its checkpoint of step 4."""
    from test_offline_loop import _digests, _resume_options, _stage

    from slate_rl.offline import diagnostics

    d = stage_inputs["dir"]
    options = [*_resume_options(stage_inputs, algo), "--seeds", "0,1"]
    outputs = [f"s{seed}{ext}" for seed in (0, 1) for ext in (".pt", ".json")]

    def run(name: str) -> int:
        return _stage(stage_inputs, algo, [*options, "--policy-output", str(d / name / "s{seed}.pt"), "--results",
                                           str(d / name / "s{seed}.json")])

    assert run("whole") == 0
    kill_at_call(diagnostics, "run_agent_sessions", validation)  # one call per validation (4 sessions)
    assert run("killed") == 130
    assert [int(read_resume_checkpoint(d / "killed" / f"s{seed}.pt.last.ckpt")["step"]) for seed in (0, 1)] == steps
    for name in outputs:  # Snakemake deletes the outputs of a failed job; the resume checkpoints stay
        (d / "killed" / name).unlink(missing_ok=True)
    capsys.readouterr()
    assert run("killed") == 0
    out = capsys.readouterr().out
    assert "starting over" not in out and "starts over" not in out  # every seed resumed
    assert _digests(d / "killed", *outputs) == _digests(d / "whole", *outputs)


def test_a_diverging_seed_stops_alone(tmp_path):
    """A seed whose Q values explode is reported as the DivergenceError of its single-seed run; the other seeds
    finish unchanged."""
    cfg = OfflineConfig(**{**CFG.__dict__, "q_limit": 1e3})
    algos = [_algo(s) for s in (0, 1)]
    with torch.no_grad():
        algos[1].critic.members[0][-1].bias.fill_(1e4)  # seed 1 starts beyond the limit
    out = train_offline_seeds(algos, _buffer(), cfg, [0, 1], lambda i: _score(algos[i]),
                              [tmp_path / "s0", tmp_path / "s1"], progress=False)
    assert isinstance(out[1], DivergenceError) and "seed 1" in str(out[1]) and "q1_mean" in str(out[1])
    _, alone = _train([0], tmp_path / "alone")
    assert not isinstance(out[0], DivergenceError) and not isinstance(alone[0], DivergenceError)
    assert [v for _, v in out[0].curve] == pytest.approx([v for _, v in alone[0].curve], rel=1e-5, abs=1e-6)
    assert not (tmp_path / "s1").exists()


# ---------------------------------------------------------------------------------------------- the stage
def test_the_stage_function_writes_every_file_of_a_single_seed_run(tmp_path, stage_inputs, expert, sim):  # noqa: F811
    """``train-offline --seeds 1,2`` for TD3+BC (the stacked trainer) writes, per seed, the files
    ``train-offline --seed s`` writes, with the same result fields; seed 2's policy acts like the single-seed
    one up to float rounding; a non-stackable algorithm and a path without {seed} are refused."""
    import argparse
    import json
    from pathlib import Path

    from test_offline_loop import _stage

    from slate_rl.core.config import from_namespace
    from slate_rl.offline.config import ALGO_CONFIGS
    from slate_rl.offline.policy import algo_policy
    from slate_rl.online.loop import evaluate
    from slate_rl.stages import train_offline

    inputs = stage_inputs
    single = tmp_path / "single"
    single.mkdir()
    assert _stage({**inputs, "dir": single}, "td3bc", ["--seed", "2"]) == 0
    parser = argparse.ArgumentParser()
    train_offline.add_arguments(parser)
    d = tmp_path / "group"

    def args(algo="td3bc", policy="seed{seed}.pt"):
        return parser.parse_args([
            "--env", "focused_topdown", "--embeddings-file", str(inputs["table"]), "--algo", algo,
            "--dataset", str(inputs["data"]), "--gems", str(inputs["gems"]), "--expert", str(inputs["best"]),
            "--seed", "0", "--total-steps", "8", "--batch-size", "32", "--eval-interval", "4",
            "--checkpoint-interval", "4", "--val-sessions", "4", "--test-sessions", "8", "--device", "cpu",
            "--logger-mode", "disabled", "--no-progress", "--policy-output", str(d / policy),
            "--results", str(d / "seed{seed}.json")])

    def group(a: argparse.Namespace, seeds: list[int]) -> list[dict]:
        cfg = from_namespace(OfflineConfig, a)
        algo_cfg = from_namespace(ALGO_CONFIGS[a.algo], a, prefix=f"{a.algo}_")
        paths = [[Path(str(t).replace("{seed}", str(s))) for s in seeds] for t in (a.policy_output, a.results)]
        return train_offline.train_together(a, train_offline.load_inputs(a), cfg, algo_cfg, seeds, *paths)

    assert _stage({**inputs, "dir": d}, "td3bc", ["--seeds", "1,2", "--policy-output", str(d / "seed{seed}.pt"),
                                                   "--results", str(d / "seed{seed}.json")]) == 0
    reference = json.loads((single / "td3bc.json").read_text())
    for s in (1, 2):
        result = json.loads((d / f"seed{s}.json").read_text())
        assert result.keys() == reference.keys() and result["seed"] == s
        assert [st for st, _ in result["learning_curve"]] == [4, 8]
        assert result["references"] == reference["references"]
        for name in (f"seed{s}.pt", f"seed{s}.pt.last.ckpt", f"seed{s}.timings.json"):
            assert (d / name).is_file(), name
        assert json.loads((d / f"seed{s}.timings.json").read_text())["seeds_trained_together"] == "1,2"
    group2 = json.loads((d / "seed2.json").read_text())
    # seed 0 of the single run's options is not seed 2: compare seed 2 with a single-seed run of seed 2
    assert reference["seed"] == 2
    assert [v for _, v in group2["learning_curve"]] == pytest.approx([v for _, v in reference["learning_curve"]],
                                                                    abs=0.5)
    acts = []
    for path in (d / "seed2.pt", single / "td3bc.pt"):
        algo, norm = make_algo("td3bc", 20, expert.ranker.action_center, expert.ranker.action_scale, 0.8, 8), \
            Normalizer(20)
        enc = copy.deepcopy(expert.actor_belief)
        load_policy(path, algo, norm, enc)
        acts.append(algo.act(norm(HELD_OUT.repeat(1, 20 // OBS + 1)[:, :20])))
        assert evaluate(sim, algo_policy(enc, expert.ranker, algo, norm), 5, 4).shape == (4,)
    torch.testing.assert_close(acts[0], acts[1], rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="trains td3bc together, not bc"):
        group(args("bc"), [1, 2])
    with pytest.raises(ConfigError, match="--seeds must be distinct"):
        group(args(), [1, 1])
