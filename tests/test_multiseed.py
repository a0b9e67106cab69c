"""Multi-seed SAC training (slate_rl.online.multiseed): the same maths as SAC.update per seed, per-seed
RNG streams independent of the number of seeds, seeds that do not influence each other, per-seed
checkpoints in the single-seed format, resume."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytest
import torch
from scipy import stats

from slate_rl.core.errors import ConfigError
from slate_rl.models.belief import BeliefEncoder
from slate_rl.models.gems import GeMS
from slate_rl.models.rankers import GeMSRanker
from slate_rl.models.stacked import StackedBeliefEncoder, StackedLinear
from slate_rl.online.config import OnlineConfig, SACConfig
from slate_rl.online.loop import evaluate, train_online, train_seeds
from slate_rl.online.multiseed import StackedSAC, seed_generator
from slate_rl.online.registry import load_agent, save_agent
from slate_rl.online.reinforce import Reinforce
from slate_rl.online.rollouts import user_keys
from slate_rl.online.sac import SAC
from slate_rl.sim.config import make_env_config
from slate_rl.sim.protocol import make_simulator

ITEMS, ITEM_DIM, K, LATENT = 40, 4, 3, 4
TAG = "sac_gems_d4_beta1_lc0.5_scratch_s0"
SMALL = SACConfig(hidden=16, belief_dim=6)


def _ranker(num_items: int = ITEMS, item_dim: int = ITEM_DIM, k: int = K) -> GeMSRanker:
    torch.manual_seed(123)
    gems = GeMS(num_items, item_dim, k, LATENT, encoder_hidden=(8,), decoder_hidden=(8,))
    return GeMSRanker(gems, torch.zeros(LATENT), torch.full((LATENT,), 2.0))


def _sac(seed: int, ranker: GeMSRanker, num_items: int = ITEMS, k: int = K, dtype=torch.float32) -> SAC:
    torch.manual_seed(seed)
    table = torch.randn(num_items, ranker.gems.item_dim)
    return SAC(ranker, num_items, table.shape[1], k, SMALL, table).to(dtype)


def _episodes(seed: int, batch: int = 3, steps: int = 5, dtype=torch.float64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"slates": torch.randint(0, ITEMS, (batch, steps + 1, K), generator=g),
            "clicks": torch.rand(batch, steps + 1, K, generator=g) < 0.3,
            "actions": torch.randn(batch, steps, LATENT, generator=g, dtype=dtype),
            "rewards": torch.rand(batch, steps, generator=g, dtype=dtype)}


def _with_generator_noise(agent: SAC, generator: torch.Generator) -> SAC:
    """``agent`` drawing its noise from ``generator`` as seed's slice of a StackedSAC does."""
    agent._noise = lambda mean: torch.randn(mean.shape, generator=generator, dtype=mean.dtype)  # type: ignore[method-assign]
    return agent


def _assert_state_close(a: dict, b: dict, rtol: float, atol: float) -> None:
    assert a["modules"].keys() == b["modules"].keys()
    for k in a["modules"]:
        torch.testing.assert_close(a["modules"][k], b["modules"][k], rtol=rtol, atol=atol, msg=k)
    for name in a["optimizers"]:
        sa, sb = a["optimizers"][name], b["optimizers"][name]
        assert sa["param_groups"] == sb["param_groups"], name
        assert sa["state"].keys() == sb["state"].keys(), name
        for idx in sa["state"]:
            for k in sa["state"][idx]:
                torch.testing.assert_close(sa["state"][idx][k], sb["state"][idx][k], rtol=rtol, atol=atol,
                                           msg=f"{name}.{idx}.{k}")


# ---------------------------------------------------------------------------------------------- the maths
def test_stacked_layers_equal_their_modules_forward_and_backward():
    torch.manual_seed(0)
    encs = [BeliefEncoder(ITEMS, ITEM_DIM, K, 6).double() for _ in range(3)]
    lins = [torch.nn.Linear(6, 5).double() for _ in range(3)]
    stacked, stacked_lin = StackedBeliefEncoder(encs), StackedLinear(lins)
    slates = torch.randint(0, ITEMS, (3, 2, 7, K))
    clicks = torch.rand(3, 2, 7, K) < 0.4
    out = stacked(slates, clicks)
    y = stacked_lin(out)
    (y.square().sum() + out.sum()).backward()
    for s, (enc, lin) in enumerate(zip(encs, lins, strict=True)):
        ref = enc(slates[s], clicks[s])
        (lin(ref).square().sum() + ref.sum()).backward()
        torch.testing.assert_close(out[s], ref, rtol=1e-12, atol=1e-12)
        for name, p in enc.named_parameters():
            group, key = name.split(".")
            torch.testing.assert_close(getattr(stacked, group)[key].grad[s], p.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(stacked_lin.weight.grad[s], lin.weight.grad, rtol=1e-10, atol=1e-12)
        # one step of the acting path (nn.GRU's step) from a non-zero belief
        h = torch.randn(2, 6, dtype=torch.float64)
        step = stacked.step(slates[:, :, 0], clicks[:, :, 0], h.expand(3, 2, 6))
        torch.testing.assert_close(step[s], enc.step(slates[s, :, 0], clicks[s, :, 0], h), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("num_seeds", [1, 3])
def test_each_seed_of_a_stacked_update_is_sac_update(num_seeds):
    """Three updates of the stacked agent equal, seed by seed, SAC.update on the same episodes and noise
    (float64): networks, targets, temperature, Adam moments and counters."""
    ranker = _ranker().double()
    seeds = [5, 6, 7][:num_seeds]
    agents = [_sac(s, ranker, dtype=torch.float64) for s in seeds]
    refs = [_with_generator_noise(copy.deepcopy(a), seed_generator(s)) for a, s in zip(agents, seeds, strict=True)]
    stacked = StackedSAC(agents, [seed_generator(s) for s in seeds]).double()
    for update in range(3):
        eps = [_episodes(100 * update + s) for s in seeds]
        per_seed = stacked.update_seeds({k: torch.stack([e[k] for e in eps]) for k in eps[0]})
        for i, (ref, ep) in enumerate(zip(refs, eps, strict=True)):
            expected = ref.update(ep)
            assert per_seed[i].keys() == expected.keys()
            for k in expected:
                assert per_seed[i][k] == pytest.approx(expected[k], rel=1e-9, abs=1e-12), k
    for i, ref in enumerate(refs):
        _assert_state_close(stacked.seed_state_dict(i), ref.state_dict(), rtol=1e-9, atol=1e-12)
        assert int(ref.updates) == 3


def test_a_seeds_random_stream_does_not_depend_on_the_number_of_seeds():
    ranker = _ranker()
    alone = StackedSAC([_sac(1, ranker)], [seed_generator(1)])
    group = StackedSAC([_sac(s, ranker) for s in (0, 1, 2)], [seed_generator(s) for s in (0, 1, 2)])
    for _ in range(2):
        assert torch.equal(alone._noise(torch.zeros(1, 4, 5, LATENT))[0], group._noise(torch.zeros(3, 4, 5, LATENT))[1])
        slates, clicks = torch.zeros(12, K, dtype=torch.int64), torch.zeros(12, K, dtype=torch.bool)
        a1 = alone.random_act(slates[:4], clicks[:4], None, 0.5)[1]
        a3 = group.random_act(slates, clicks, None, 0.5)[1]
        assert torch.equal(a1, a3[4:8])
    # acting: seed 1's belief, noise and action are the same alone and in the group
    slates = torch.randint(0, ITEMS, (3 * 4, K))
    clicks = torch.rand(3 * 4, K) < 0.3
    s1, act1, h1 = alone.act(slates[4:8], clicks[4:8], None)
    s3, act3, h3 = group.act(slates, clicks, None)
    torch.testing.assert_close(act1, act3[4:8], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(h1[0], h3[1], rtol=1e-6, atol=1e-6)
    assert torch.equal(seed_generator(1).get_state(), seed_generator(1).get_state())
    assert not torch.equal(seed_generator(1).get_state(), seed_generator(2).get_state())


def test_multiseed_refuses_other_agents_and_bad_input(tmp_path):
    sim = make_simulator(make_env_config("focused_topdown", num_items=ITEMS, slate_size=K, episode_length=4))
    ranker = _ranker()
    cfg = OnlineConfig(total_steps=1, warmup_sessions=0, val_interval=1, val_sessions=2)
    torch.manual_seed(0)
    reinforce = Reinforce(ITEMS, ITEM_DIM, K, item_table=torch.randn(ITEMS, ITEM_DIM), variant="published")
    with pytest.raises(ConfigError, match="not Reinforce"):  # one seed at a time
        train_seeds(sim, [reinforce, reinforce], cfg, [0, 1], lambda i, a, s: None,
                    [tmp_path / "l0.ckpt", tmp_path / "l1.ckpt"], progress=False)
    with pytest.raises(ConfigError, match="distinct seeds"):
        train_seeds(sim, [_sac(0, ranker), _sac(0, ranker)], cfg, [0, 0], lambda i, a, s: None,
                    [tmp_path / "a.ckpt", tmp_path / "b.ckpt"], progress=False)
    with pytest.raises(ConfigError, match="one seed, one last path"):
        train_seeds(sim, [_sac(0, ranker)], cfg, [0, 1], lambda i, a, s: None, [tmp_path / "a.ckpt"], progress=False)


# ---------------------------------------------------------------------------------------------- training
TINY_ENV = dict(num_items=ITEMS, slate_size=K, episode_length=6)
TINY = OnlineConfig(total_steps=12, sessions_per_step=2, updates_per_step=1, batch_size=4, buffer_capacity=50,
                    warmup_sessions=4, val_interval=4, val_sessions=8, checkpoint_interval=4)


@pytest.fixture(scope="module")
def tiny_sim():
    return make_simulator(make_env_config("focused_topdown", **TINY_ENV))


def _train(sim, seeds, path, cfg=TINY, ranker=None, bests=None, fingerprints=None):
    ranker = ranker or _ranker()
    agents = [_sac(s, ranker) for s in seeds]

    def save_best(i, agent, state):
        if bests is not None:
            bests[seeds[i]] = (state.step, copy.deepcopy(agent.state_dict()))

    states = train_seeds(sim, agents, cfg, seeds, save_best, [path / f"seed{s}.last.ckpt" for s in seeds],
                         progress=False, fingerprints=fingerprints)
    return agents, states


def test_a_seed_trained_alone_equals_the_same_seed_trained_among_others(tiny_sim, tmp_path):
    """Seed 1 alone (S = 1) and among seeds 0, 1, 2 (S = 3): the same users, the same random stream, so the
    same learning curve, best step and final networks up to float rounding."""
    alone_agents, alone = _train(tiny_sim, [1], tmp_path / "alone")
    group_agents, group = _train(tiny_sim, [0, 1, 2], tmp_path / "group")
    assert alone[0].step == group[1].step == TINY.total_steps
    assert alone[0].sessions == group[1].sessions == TINY.total_steps * TINY.sessions_per_step
    assert [s for s, _ in alone[0].curve] == [s for s, _ in group[1].curve] == [4, 8, 12]
    assert [v for _, v in alone[0].curve] == pytest.approx([v for _, v in group[1].curve], abs=1e-4)
    assert alone[0].best_step == group[1].best_step
    _assert_state_close(alone_agents[0].state_dict(), group_agents[1].state_dict(), rtol=1e-4, atol=1e-5)
    # the neighbours are other seeds: different users, different networks
    assert not torch.equal(group_agents[0].actor[0].weight, group_agents[1].actor[0].weight)


def test_a_seed_alone_and_among_others_agree(tiny_sim, tmp_path):
    """One loop, one RNG scheme: 6 seeds trained alone (``train_online``, S = 1) and the same 6 seeds trained
    together follow the same streams, so they differ by float rounding only: test returns and validation curves
    that a Welch test cannot tell apart, and each seed's test return alone within 0.5 of its return among
    the others (equal on the machine this was written on)."""
    cfg = OnlineConfig(**{**TINY.__dict__, "total_steps": 24, "val_interval": 8, "checkpoint_interval": 24})
    seeds = list(range(10, 16))
    ranker = _ranker()
    agents, group_states = _train(tiny_sim, seeds, tmp_path, cfg, ranker)
    together = [float(evaluate(tiny_sim, a, 99, 40).mean()) for a in agents]
    alone, alone_states = [], []
    for s in seeds:
        agent = _sac(s, ranker)
        alone_states.append(train_online(tiny_sim, agent, cfg, s, lambda a, st: None, tmp_path / f"alone{s}.ckpt",
                                         progress=False))
        alone.append(float(evaluate(tiny_sim, agent, 99, 40).mean()))
    assert stats.ttest_ind(together, alone, equal_var=False).pvalue > 0.01, (together, alone)
    for j in range(3):  # each point of the validation curve
        a = [st.curve[j][1] for st in group_states]
        b = [st.curve[j][1] for st in alone_states]
        assert stats.ttest_ind(a, b, equal_var=False).pvalue > 0.01, (j, a, b)
    assert len(set(together)) > 1  # the seeds differ
    assert all(abs(a - b) <= 0.5 for a, b in zip(alone, together, strict=True)), (alone, together)


def test_per_seed_checkpoints_load_as_ordinary_agents_and_act_like_the_stacked_agent(tiny_sim, tmp_path):
    ranker = _ranker()
    seeds = [3, 4]
    bests: dict[int, tuple[int, dict]] = {}
    agents, states = _train(tiny_sim, seeds, tmp_path, ranker=ranker, bests=bests)
    stacked = StackedSAC(agents, [seed_generator(s) for s in seeds])
    keys = torch.cat([user_keys(77, 0, 5, tiny_sim.device)] * 2)
    sim_state, obs = tiny_sim.reset(keys)
    slate, action, hidden = stacked.act(obs.slate, obs.clicks, None, deterministic=True)
    for i, s in enumerate(seeds):
        path = tmp_path / f"seed{s}.best.ckpt"
        save_agent(path, agents[i], TAG, {"seed": s})
        fresh = _sac(100 + s, ranker)
        load_agent(path, fresh, TAG)
        _assert_state_close(fresh.state_dict(), agents[i].state_dict(), rtol=0, atol=0)
        one_slate, one_action, _ = fresh.act(obs.slate[i * 5:(i + 1) * 5], obs.clicks[i * 5:(i + 1) * 5], None,
                                             deterministic=True)
        torch.testing.assert_close(one_action, action[i * 5:(i + 1) * 5], rtol=1e-5, atol=1e-5)
        assert torch.equal(one_slate, slate[i * 5:(i + 1) * 5])
        # the resume checkpoint is a single-seed one (plus the seed's generator), and the best agent was
        # saved through the same callback a single-seed run uses
        last = torch.load(tmp_path / f"seed{s}.last.ckpt", weights_only=True)
        assert {"agent", "buffer", "counters", "best_val", "curve", "medium", "sample_rng"} <= last.keys()
        assert int(last["counters"][0]) == TINY.total_steps and bests[s][0] == states[i].best_step


def test_a_killed_group_resumes_to_the_same_result(tiny_sim, tmp_path):
    seeds = [0, 1]
    straight, s1 = _train(tiny_sim, seeds, tmp_path / "a")
    _train(tiny_sim, seeds, tmp_path / "b", OnlineConfig(**{**TINY.__dict__, "total_steps": 8}))  # killed at 8
    resumed, s2 = _train(tiny_sim, seeds, tmp_path / "b")
    for i in range(2):
        assert s1[i].curve == s2[i].curve and s1[i].best_step == s2[i].best_step
        _assert_state_close(straight[i].state_dict(), resumed[i].state_dict(), rtol=0, atol=0)
    # one seed's checkpoint from another run: the whole group starts over (and ends as a straight run)
    (tmp_path / "b" / "seed1.last.ckpt").unlink()
    restarted, s3 = _train(tiny_sim, seeds, tmp_path / "b")
    assert [st.curve for st in s3] == [st.curve for st in s1]


# ---------------------------------------------------------------------------------------------- the stage
def _stage(tmp_path, agent: str, seed_args: list[str], out: str, results: str, extra: Sequence[str] = ()) -> int:
    import json

    import numpy as np

    from slate_rl.cli import main
    from slate_rl.sim.embeddings import generate_item_embeddings

    table = tmp_path / "focused.npy"
    if not table.is_file():
        np.save(table, generate_item_embeddings("focused", 0, 1000, 10, 2))
    env = json.dumps({"base": "focused_topdown", "episode_length": 5})
    return main(["train-agent", "--env", "mine", "--env-spec", env, "--embeddings-file", str(table), "--agent", agent,
                 *seed_args, "--test-sessions", "4", "--total-steps", "3", "--sessions-per-step", "2",
                 "--batch-size", "2", "--warmup-sessions", "2", "--val-interval", "1", "--val-sessions", "4",
                 "--checkpoint-interval", "1", "--hidden", "16", "--device", "cpu", "--no-progress",
                 "--logger-mode", "disabled", "--output-dir", out, "--results", results, *extra])


def test_train_agent_with_seeds_writes_every_file_of_a_single_seed_run(tmp_path, capsys):
    import json

    from slate_rl.online.registry import agent_from_checkpoint

    single = tmp_path / "single"
    assert _stage(tmp_path, "sac_topk_ideal", ["--seed", "2"], str(single / "agent"), str(single / "seed2.json")) == 0
    group = tmp_path / "group"
    assert _stage(tmp_path, "sac_topk_ideal", ["--seeds", "1,2"], str(group / "agent{seed}"),
                  str(group / "seed{seed}.json")) == 0
    expected = sorted(p.name for p in (single / "agent").iterdir())
    assert expected == ["best.ckpt", "best.work.ckpt", "last.ckpt", "medium.ckpt"]
    import numpy as np

    sim = make_simulator("focused_topdown", np.load(tmp_path / "focused.npy"))
    for s in (1, 2):
        assert sorted(p.name for p in (group / f"agent{s}").iterdir()) == expected
        result = json.loads((group / f"seed{s}.json").read_text())
        reference = json.loads((single / "seed2.json").read_text())
        assert result.keys() == reference.keys() and result["seed"] == s
        assert "sac" in result and "slateq" not in result and "reinforce" not in result  # its own section only
        assert [st for st, _ in result["learning_curve"]] == [1, 2, 3]
        agent, meta = agent_from_checkpoint(group / f"agent{s}" / "best.ckpt", sim.items, 1000, 10, 5)
        assert meta["seed"] == s and meta["step"] == result["best_step"]
        assert json.loads((group / f"seed{s}.timings.json").read_text())["seeds_trained_together"] == "1,2"
    # bad input: one clear message each
    assert _stage(tmp_path, "sac_topk_ideal", ["--seeds", "1,2"], str(group / "x"), str(group / "x{seed}.json")) == 2
    assert "--output-dir must contain {seed}" in capsys.readouterr().err
    assert _stage(tmp_path, "sac_topk_ideal", ["--seed", "1", "--seeds", "1,2"], str(group / "y{seed}"),
                  str(group / "y{seed}.json")) == 2
    assert "exactly one of --seed and --seeds" in capsys.readouterr().err


def test_train_agent_seeds_of_other_agents_train_one_after_another_to_the_bytes_of_seed_runs(tmp_path):
    """REINFORCE cannot stack its seeds: `--seeds 1,2` trains them one after another, each writing the bytes of
    its `--seed` run (results, best, medium and last checkpoints)."""
    import hashlib

    def digests(directory, result):
        files = [result, *(directory / f"{c}.ckpt" for c in ("best", "medium", "last"))]
        return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]

    group = tmp_path / "group"
    assert _stage(tmp_path, "reinforce", ["--seeds", "1,2"], str(group / "a{seed}"), str(group / "r{seed}.json")) == 0
    for s in (1, 2):
        alone = tmp_path / f"alone{s}"
        assert _stage(tmp_path, "reinforce", ["--seed", str(s)], str(alone / "a"), str(alone / "r.json")) == 0
        assert digests(group / f"a{s}", group / f"r{s}.json") == digests(alone / "a", alone / "r.json"), s
        assert "seeds_trained_together" not in (group / f"r{s}.timings.json").read_text()


def test_a_group_killed_while_testing_resumes_every_seed(tmp_path, monkeypatch):
    """Seeds are renamed last.work.ckpt -> last.ckpt only once every seed is tested: a job killed while testing (whose
    outputs Snakemake deletes, last.ckpt included) leaves every seed's resume state, and its rerun resumes the group
    to the results of an uninterrupted run."""
    import json

    from slate_rl.stages import train_agent

    whole = tmp_path / "whole"
    assert _stage(tmp_path, "sac_topk_ideal", ["--seeds", "1,2"], str(whole / "a{seed}"),
                  str(whole / "s{seed}.json")) == 0
    real = train_agent.write_json
    written: list[str] = []

    def write_then_die(path, payload):
        if written:
            raise KeyboardInterrupt  # killed while testing the second seed
        written.append(str(path))
        real(path, payload)

    monkeypatch.setattr(train_agent, "write_json", write_then_die)
    killed = tmp_path / "killed"
    assert _stage(tmp_path, "sac_topk_ideal", ["--seeds", "1,2"], str(killed / "a{seed}"),
                  str(killed / "s{seed}.json")) != 0
    monkeypatch.setattr(train_agent, "write_json", real)
    for s in (1, 2):
        assert (killed / f"a{s}" / "last.work.ckpt").is_file()
        for name in ("best.ckpt", "medium.ckpt", "last.ckpt"):  # what Snakemake deletes of a failed job
            (killed / f"a{s}" / name).unlink(missing_ok=True)
        (killed / f"s{s}.json").unlink(missing_ok=True)
    assert _stage(tmp_path, "sac_topk_ideal", ["--seeds", "1,2"], str(killed / "a{seed}"),
                  str(killed / "s{seed}.json")) == 0
    for s in (1, 2):
        resumed, reference = (json.loads((d / f"s{s}.json").read_text()) for d in (killed, whole))
        assert resumed["learning_curve"] == reference["learning_curve"]
        assert resumed["return_mean"] == reference["return_mean"]
        assert (killed / f"a{s}" / "last.ckpt").is_file() and not (killed / f"a{s}" / "last.work.ckpt").exists()


def test_exactly_the_plain_sac_agents_train_their_seeds_together():
    """stackable (what train-agent --seeds stacks) accepts the SAC agents with a ranker and no other agent;
    check_stackable refuses the others with one ConfigError."""
    from slate_rl.online.config import agent_kind, agent_names, variant_tag
    from slate_rl.online.multiseed import check_stackable, stackable
    from slate_rl.online.registry import build_agent
    from slate_rl.online.slateq import ClickModel

    sim = make_simulator(make_env_config("focused_topdown", num_items=ITEMS, slate_size=K, episode_length=4))
    ranker = _ranker(item_dim=sim.items.shape[1])
    mf = torch.randn(ITEMS, sim.items.shape[1])
    for name in agent_names():
        tag = variant_tag(name, "published", "d4_beta1_lc0.5_scratch_s0")
        small = SMALL if agent_kind(tag).config is SACConfig else None
        agent = build_agent(tag, sim.items, ITEMS, K, 4, ranker, mf, small, click_model=ClickModel.of(sim))
        expected = name in ("sac_gems", "sac_topk_ideal", "sac_topk_mf", "sac_kargmax")
        assert stackable(agent) == expected, name
        if not expected:
            with pytest.raises(ConfigError, match="train its seeds one by one"):
                check_stackable(agent)
