"""The offline training loop, the divergence guard, the saved policy and the train-offline stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from slate_rl.cli import main
from slate_rl.core.config import from_dict, to_dict
from slate_rl.core.errors import ArtifactError
from slate_rl.core.io import read_resume_checkpoint
from slate_rl.data.d4rl import load_dataset, save_dataset
from slate_rl.models.gems import GeMS
from slate_rl.models.rankers import GeMSRanker, save_gems_ranker
from slate_rl.offline.base import OfflineAlgo, sample_batch
from slate_rl.offline.datasets import collect_episodes, encode_beliefs
from slate_rl.offline.diagnostics import DIAGNOSTIC_KEYS, Diagnostics, mean_noise_norm
from slate_rl.offline.evaluation import evaluate_returns
from slate_rl.offline.loop import (
    DivergenceError,
    Normalizer,
    OfflineConfig,
    prepare_buffer,
    train_offline,
)
from slate_rl.offline.policy import load_policy, policy_for, save_policy, zero_policy
from slate_rl.offline.registry import ALGOS, make_algo
from slate_rl.offline.sequence import returns_to_go
from slate_rl.online.loop import evaluate
from slate_rl.online.registry import build_agent, save_agent
from slate_rl.online.rollouts import run_agent_sessions, user_keys
from slate_rl.sim.config import make_env_config
from slate_rl.sim.embeddings import generate_item_embeddings
from slate_rl.sim.protocol import make_simulator

AGENT = "sac_gems_d8_beta1_lc0.5_scratch_s1"


@pytest.fixture(scope="module")
def sim():
    return make_simulator("focused_topdown")


@pytest.fixture(scope="module")
def expert(sim):
    torch.manual_seed(0)
    gems = GeMSRanker(GeMS(latent_dim=8), torch.zeros(8), torch.ones(8) * 2)
    return build_agent(AGENT, sim.items, 1000, 10, 100, gems=gems)


@pytest.fixture(scope="module")
def arrays(sim, expert):
    torch.set_num_threads(1)
    return collect_episodes(sim, expert, expert.actor_belief, seed=5, episodes=12, mode="train", progress=False)


def _metadata(expert, arrays, gems_sha="g" * 16, encoder_sha="e" * 16):
    r = expert.ranker
    return {"env": "focused_topdown", "env_config": to_dict(make_env_config("focused_topdown")),
            "quality": "expert", "episodes": arrays["reset_slates"].shape[0],
            "episode_length": 100, "slate_size": 10, "num_items": 1000, "obs_dim": 20, "action_dim": 8,
            "action_center": r.action_center.tolist(), "action_scale": r.action_scale.tolist(),
            "gems_sha256": gems_sha, "behaviour": {"agent": AGENT},
            "behaviour_return": {"mean": 50.0, "ci95": 1.0, "source": "test"},
            "state_encoder": {"sha256": encoder_sha}, "seed": 5}


@pytest.fixture()
def dataset(tmp_path, expert, arrays):
    path = tmp_path / "expert.npz"
    save_dataset(path, arrays, _metadata(expert, arrays))
    return load_dataset(path)


def _prepared(dataset):
    """The dataset in the replay buffer with normalised states."""
    buf = dataset.to_buffer()
    prepare_buffer(buf, Normalizer(20), True)
    return buf


def _algo(name, expert, total_steps=20, **kw):
    torch.manual_seed(1)
    return make_algo(name, 20, expert.ranker.action_center, expert.ranker.action_scale, 0.8, total_steps, **kw)


def test_buffer_states_are_normalised_and_dones_mark_the_time_limit(dataset):
    buf = dataset.to_buffer()
    raw = torch.from_numpy(dataset.arrays["observations"])
    norm = Normalizer(20)
    prepare_buffer(buf, norm, normalize=True)
    flat = buf.data["observations"].flatten(0, 1)
    assert torch.allclose(flat.mean(0), torch.zeros(20), atol=1e-4)
    assert torch.allclose(norm(raw), flat, atol=1e-5)
    cfg = OfflineConfig(batch_size=4096, reward_scale=2.0)
    gen = torch.Generator().manual_seed(0)
    batch = sample_batch(buf, cfg, gen)
    tr = buf.sample_transitions(4096, torch.Generator().manual_seed(0), fields=("rewards",))
    assert torch.equal(batch["dones"], (tr["timesteps"] == 99).float()) and batch["dones"].sum() > 0
    assert torch.equal(batch["rewards"], 2.0 * tr["rewards"])
    no_done = sample_batch(buf, OfflineConfig(bootstrap_timeout=True), gen)
    assert no_done["dones"].sum() == 0


def test_resume_after_a_kill_ends_bit_identical(dataset, expert, tmp_path):
    cfg = OfflineConfig(total_steps=12, batch_size=32, eval_interval=4, checkpoint_interval=4, log_interval=2)

    def run(last, validate):
        buf = _prepared(dataset)
        algo = _algo("td3bc", expert, 12)
        state = train_offline(algo, buf, cfg, 3, validate, last, progress=False, fingerprint="fp")
        return algo, state

    full, full_state = run(tmp_path / "a.ckpt", lambda: 1.0)
    calls = []

    def killing_validate():
        calls.append(1)
        if len(calls) == 2:  # step 8, after the checkpoint of step 4
            raise KeyboardInterrupt
        return 1.0

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.ckpt", killing_validate)
    assert "train_seconds" not in read_resume_checkpoint(tmp_path / "b.ckpt")  # no wall clock in the checkpoint
    resumed, resumed_state = run(tmp_path / "b.ckpt", lambda: 1.0)
    assert resumed_state.step == 12 and resumed_state.train_seconds > 0
    assert json.dumps(resumed_state.curve) == json.dumps(full_state.curve)  # integer steps, as written
    assert (tmp_path / "b.ckpt").read_bytes() == (tmp_path / "a.ckpt").read_bytes()
    for (n, p), (_, q) in zip(full.state_dict()["modules"].items(), resumed.state_dict()["modules"].items(),
                              strict=True):
        assert torch.equal(p, q), n
    # another fingerprint (other settings or inputs): the stale checkpoint is ignored
    buf = _prepared(dataset)
    fresh = train_offline(_algo("bc", expert, 12), buf, cfg, 3, lambda: 1.0, tmp_path / "b.ckpt", progress=False,
                          fingerprint="other")
    assert fresh.step == 12


class _Exploding(OfflineAlgo):
    name = "exploding"

    def __init__(self, bad_step: int, value: float) -> None:
        super().__init__(20, torch.zeros(8), torch.ones(8), 0.8)
        self.bad_step, self.value, self.calls = bad_step, value, 0

    def update(self, batch):
        self.calls += 1
        q = torch.tensor(self.value if self.calls >= self.bad_step else 1.0)
        return {"critic_loss": torch.tensor(0.5), "q_mean": q}


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e9])
def test_divergence_guard_names_the_quantity_and_the_step(dataset, value):
    buf = _prepared(dataset)
    cfg = OfflineConfig(total_steps=50, batch_size=8, eval_interval=50, checkpoint_interval=50, log_interval=20)
    with pytest.raises(DivergenceError, match=r"exploding diverged: q_mean .* at step 7;") as info:
        train_offline(_Exploding(7, value), buf, cfg, 0, lambda: 0.0, "/nonexistent/x.ckpt", progress=False)
    assert "offline.gamma" in str(info.value)


def test_saved_policy_acts_like_the_trained_one(dataset, expert, sim, tmp_path):
    buf = dataset.to_buffer()
    norm = Normalizer(20)
    prepare_buffer(buf, norm, True)
    algo = _algo("bc", expert, 30)
    train_offline(algo, buf, OfflineConfig(total_steps=30, batch_size=64, eval_interval=30, checkpoint_interval=30),
                  0, lambda: 0.0, tmp_path / "l.ckpt", progress=False)
    save_policy(tmp_path / "p.pt", algo, norm, expert.actor_belief, {"algo": "bc"})
    other_algo, other_norm = _algo("bc", expert, 30), Normalizer(20)
    other_encoder = build_agent(AGENT, sim.items, 1000, 10, 100, gems=expert.ranker).actor_belief
    assert load_policy(tmp_path / "p.pt", other_algo, other_norm, other_encoder) == {"algo": "bc"}
    a = policy_for(expert.actor_belief, expert.ranker, algo, norm)
    b = policy_for(other_encoder, expert.ranker, other_algo, other_norm)
    assert torch.equal(evaluate(sim, a, 9, 6), evaluate(sim, b, 9, 6))
    with pytest.raises(ArtifactError, match="field 'algo'"):
        load_policy(tmp_path / "p.pt", _algo("td3bc", expert), Normalizer(20), other_encoder)


def test_zero_policy_plays_one_constant_latent_action(expert, sim):
    pol = zero_policy(expert.actor_belief, expert.ranker)
    slates = torch.zeros(3, 10, dtype=torch.long)
    slate, action, _ = pol.act(slates, torch.zeros(3, 10, dtype=torch.bool), None)
    assert torch.equal(action, torch.zeros(3, 8))
    assert torch.equal(slate, expert.ranker.rank(torch.zeros(1, 8)).expand(3, -1))


@pytest.fixture()
def stage_inputs(tmp_path, sim, expert, arrays):
    """Files as the pipeline has them: item table, GeMS, expert checkpoint, dataset."""
    table = tmp_path / "focused.npy"
    np.save(table, generate_item_embeddings("focused", 2023, 1000, 10, 2))
    gems = tmp_path / "gems.ckpt"
    save_gems_ranker(gems, expert.ranker)
    best = tmp_path / "best.ckpt"
    save_agent(best, expert, AGENT, {"step": 1})
    from slate_rl.core.io import file_sha256

    data = tmp_path / "expert.npz"
    save_dataset(data, arrays, _metadata(expert, arrays, file_sha256(gems), file_sha256(best)))
    return {"table": table, "gems": gems, "best": best, "data": data, "dir": tmp_path}


def _stage(inputs, algo="bc", extra=()):
    d = inputs["dir"]
    seed = [] if "--seeds" in extra else ["--seed", "0"]
    return main(["train-offline", "--env", "focused_topdown", "--embeddings-file", str(inputs["table"]),
                 "--algo", algo, "--dataset", str(inputs["data"]), "--gems", str(inputs["gems"]),
                 "--expert", str(inputs["best"]), *seed, "--total-steps", "8",
                 "--batch-size", "32", "--eval-interval", "4", "--checkpoint-interval", "4", "--val-sessions", "4",
                 "--test-sessions", "8", "--device", "cpu", "--logger-mode", "disabled", "--no-progress",
                 "--policy-output", str(d / f"{algo}.pt"), "--results", str(d / f"{algo}.json"), *extra])


def test_train_offline_stage_writes_policy_and_results(stage_inputs, capsys):
    assert _stage(stage_inputs, "td3bc") == 0
    # --no-progress (as the rules run it): plain progress lines for the job's log instead of a bar
    out = capsys.readouterr().out
    assert "td3bc: step 8/8" in out and "steps/s" in out
    res = json.loads((stage_inputs["dir"] / "td3bc.json").read_text())
    for key in ("return_mean", "return_ci95", "n_sessions", "normalized_score", "learning_curve", "inputs"):
        assert key in res, key
    assert res["n_sessions"] == 8 and [s for s, _ in res["learning_curve"]] == [4, 8]
    refs = res["references"]
    assert set(refs) >= {"behaviour", "zero_action", "random", "expert", "expert_deterministic"}
    assert refs["behaviour"]["return_mean"] == 50.0
    # Normalised by the expert agent's deterministic test return, never the collection-mode one.
    r, lo, hi = res["return_mean"], refs["random"]["return_mean"], refs["expert_deterministic"]["return_mean"]
    assert res["normalized_score"] == pytest.approx(100 * (r - lo) / (hi - lo))
    assert set(res["inputs"]) == {"dataset", "gems", "expert", "embeddings"}
    assert (stage_inputs["dir"] / "td3bc.pt").is_file()
    assert [st for st, _ in res["diagnostics"]] == [4, 8]
    for _, diag in res["diagnostics"]:
        assert set(diag) == set(DIAGNOSTIC_KEYS)
        assert diag["overestimation"] == pytest.approx(diag["q_mean"] - diag["mc_return_mean"])
        assert diag["action_distance"] > 0 and 0 <= diag["slate_match"] <= diag["slot_match"] <= 1
        assert diag["behaviour_noise"] is None  # the test dataset's metadata names no collection noise


def test_discounted_returns_of_a_scripted_session():
    rewards = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]])
    # G_2 = r_2; G_1 = r_1 + 0.5 r_2; G_0 = r_0 + 0.5 r_1 + 0.25 r_2 (the session ends at the time limit)
    expected = torch.tensor([[1 + 1 + 0.75, 2 + 1.5, 3.0], [1.0, 2.0, 4.0]])
    assert torch.allclose(returns_to_go(rewards, 0.5), expected)
    assert mean_noise_norm(0.1, 1) == pytest.approx(0.1 * (2 / np.pi) ** 0.5)  # E|N(0, s^2)| = s sqrt(2/pi)


def _diagnostics(sim, expert, dataset, algo, cfg, noise=0.1):
    buf = _prepared(dataset)
    norm = Normalizer(20)
    norm.fit(torch.from_numpy(dataset.arrays["observations"]))
    return buf, Diagnostics(sim, policy_for(expert.actor_belief, expert.ranker, algo, norm), algo,
                            expert.actor_belief, norm, expert.ranker, buf, cfg, {"behaviour": {"noise": noise}})


@pytest.mark.parametrize("name", ["td3bc", "cql", "iql", "bc"])
def test_diagnostics_change_neither_training_nor_the_validation_return(sim, expert, dataset, name, tmp_path):
    """A run validated by Diagnostics ends with the networks and learning curve of a run validated by the plain
    validation return (the same number), and records the critic figures only for the methods with critics."""
    cfg = OfflineConfig(total_steps=6, batch_size=32, eval_interval=3, checkpoint_interval=6, log_interval=3,
                        val_sessions=3)
    algo = _algo(name, expert, 6)
    buf, diag = _diagnostics(sim, expert, dataset, algo, cfg)
    with_diag = train_offline(algo, buf, cfg, 3, diag, tmp_path / "a.ckpt", progress=False)
    plain_algo = _algo(name, expert, 6)
    buf, plain = _diagnostics(sim, expert, dataset, plain_algo, cfg)
    state = train_offline(plain_algo, buf, cfg, 3, lambda: plain()[0], tmp_path / "b.ckpt", progress=False)
    assert with_diag.curve == state.curve and state.diagnostics == []
    for (n, p), (_, q) in zip(algo.state_dict()["modules"].items(), plain_algo.state_dict()["modules"].items(),
                              strict=True):
        assert torch.equal(p, q), n
    policy = policy_for(expert.actor_belief, expert.ranker, algo, plain.normalizer)
    assert with_diag.curve[-1][1] == float(evaluate_returns(sim, policy, cfg.val_seed, 3).mean())
    # the states the critic is evaluated at are those the policy acted on: its actions there are the played ones
    _, ep = run_agent_sessions(sim, policy, user_keys(cfg.val_seed, 0, 3, sim.device), "eval")
    states = plain.normalizer(encode_beliefs(expert.actor_belief, ep["slates"], ep["clicks"])[:, :-1])
    torch.testing.assert_close(algo.act(states.flatten(0, 1)), ep["actions"].flatten(0, 1))
    assert [st for st, _ in with_diag.diagnostics] == [3, 6]
    last = with_diag.diagnostics[-1][1]
    critic = name != "bc"
    assert all((last[k] is not None) == critic for k in ("q_mean", "mc_return_mean", "overestimation"))
    assert last["behaviour_noise"] == 0.1 and last["noise_distance"] == pytest.approx(mean_noise_norm(0.1, 8))
    assert last["action_distance"] > 0 and 0 <= last["slate_match"] <= last["slot_match"] <= 1
    # the dataset's own actions: distance 0 and every slate the same
    real = diag.algo.act
    diag.algo.act = lambda obs: diag.actions if obs.shape == diag.obs.shape else real(obs)  # type: ignore
    same = diag()[1]
    assert same["action_distance"] == 0 and same["slate_match"] == 1 and same["slot_match"] == 1


def _references(inputs, *extra: str) -> int:
    return main(["offline-references", "--env", "focused_topdown", "--embeddings-file", str(inputs["table"]),
                 "--gems", str(inputs["gems"]), "--expert", str(inputs["best"]), "--test-sessions", "8",
                 "--device", "cpu", "--no-progress", "--output", str(inputs["dir"] / "references.json"), *extra])


def test_the_references_file_gives_the_result_measured_in_the_job(stage_inputs, capsys):
    """train-offline --references (the pipeline's way) writes the same result bytes as a job measuring its
    reference policies itself; a file of other test users, expert noise or GeMS is refused, naming the setting."""
    d = stage_inputs["dir"]
    assert _stage(stage_inputs, "bc") == 0
    measured = (d / "bc.json").read_bytes()
    assert _references(stage_inputs) == 0
    doc = json.loads((d / "references.json").read_text())
    assert set(doc["references"]) == {"expert", "expert_deterministic", "zero_action", "random"}
    assert doc["settings"]["test_sessions"] == 8 and doc["settings"]["expert_noise"] == 0.1
    (d / "bc.json").unlink()
    assert _stage(stage_inputs, "bc", ["--references", str(d / "references.json")]) == 0
    assert (d / "bc.json").read_bytes() == measured
    capsys.readouterr()
    for extra, setting in ((["--test-seed", "1"], "test_seed"), (["--expert-noise", "0.2"], "expert_noise")):
        assert _stage(stage_inputs, "bc", ["--references", str(d / "references.json"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"measured with {setting} = " in err, err
    torch.manual_seed(7)
    other = d / "other.ckpt"
    save_gems_ranker(other, GeMSRanker(GeMS(latent_dim=4), torch.zeros(4), torch.ones(4)))
    assert _stage(stage_inputs, "bc", ["--references", str(d / "references.json"), "--relabel-gems", str(other)]) == 2
    assert "measured with gems_sha256 = " in capsys.readouterr().err
    (d / "references.json").write_text('{"format": "slate_rl.offline_references", "version": 1, "settings": 3}')
    assert _stage(stage_inputs, "bc", ["--references", str(d / "references.json")]) == 2
    assert "field 'settings' is 3" in capsys.readouterr().err


def test_train_offline_stage_relabels_for_another_gems(stage_inputs):
    torch.manual_seed(7)
    other = GeMSRanker(GeMS(latent_dim=4), torch.zeros(4), torch.ones(4))
    path = stage_inputs["dir"] / "other.ckpt"
    save_gems_ranker(path, other)
    assert _stage(stage_inputs, "bc", ["--relabel-gems", str(path)]) == 0
    res = json.loads((stage_inputs["dir"] / "bc.json").read_text())
    assert res["decoder"].startswith("relabelled") and res["relabel"]["gems"] == str(path)
    assert 0.0 <= res["relabel"]["clipped_fraction"] <= 1.0


def test_train_offline_stage_rejects_a_redefined_environment(stage_inputs, capsys, tmp_path):
    """A dataset collected under another definition of the environment (same name) is refused."""
    ds = load_dataset(stage_inputs["data"])
    meta = {k: v for k, v in ds.metadata.items() if k not in ("format", "version")}
    other = tmp_path / "redefined.npz"
    save_dataset(other, ds.arrays, {**meta, "env_config": {**meta["env_config"], "diversity_penalty": 2.0}})
    capsys.readouterr()
    assert _stage({**stage_inputs, "data": other}) == 2
    err = capsys.readouterr().err
    assert "env_config.diversity_penalty" in err and err.count("\n") == 1


def test_train_offline_stage_rejects_another_encoder(stage_inputs, capsys, sim):
    torch.manual_seed(3)
    gems = GeMSRanker(GeMS(latent_dim=8), torch.zeros(8), torch.ones(8) * 2)
    save_agent(stage_inputs["best"], build_agent(AGENT, sim.items, 1000, 10, 100, gems=gems), AGENT, {"step": 2})
    assert _stage(stage_inputs) == 2
    err = capsys.readouterr().err
    assert "state_encoder.sha256" in err and err.count("\n") == 1


def test_validation_does_not_touch_the_training_rng(dataset, expert, tmp_path):
    """Validation reseeds the global RNG (fixed users): training noise must not repeat because of it."""
    cfg = OfflineConfig(total_steps=8, batch_size=32, eval_interval=2, checkpoint_interval=8, log_interval=2)

    def run(name, validate):
        buf = _prepared(dataset)
        algo = _algo("td3bc", expert, 8)
        train_offline(algo, buf, cfg, 3, validate, tmp_path / f"{name}.ckpt", progress=False)
        return algo

    def reseeding():
        torch.manual_seed(123)
        return 0.0

    plain, reseeded = run("a", lambda: 0.0), run("b", reseeding)
    for (n, p), (_, q) in zip(plain.state_dict()["modules"].items(), reseeded.state_dict()["modules"].items(),
                              strict=True):
        assert torch.equal(p, q), n


def test_corrupted_resume_checkpoint_is_one_clear_error(dataset, expert, tmp_path):
    last = tmp_path / "x.last.ckpt"
    last.write_bytes(b"not a checkpoint")
    buf = _prepared(dataset)
    with pytest.raises(ArtifactError, match="unreadable resume checkpoint"):
        train_offline(_algo("bc", expert), buf, OfflineConfig(total_steps=2), 0, lambda: 0.0, last, progress=False)


def test_online_resume_ignores_a_checkpoint_of_other_settings(sim, tmp_path):
    from slate_rl.online.loop import OnlineConfig, train_online

    torch.manual_seed(0)
    gems = GeMSRanker(GeMS(latent_dim=8), torch.zeros(8), torch.ones(8) * 2)
    cfg = OnlineConfig(total_steps=2, sessions_per_step=2, batch_size=2, warmup_sessions=2, val_interval=1,
                       val_sessions=2, checkpoint_interval=1, buffer_capacity=8)
    last = tmp_path / "last.ckpt"

    def train(fp, total):
        agent = build_agent(AGENT, sim.items, 1000, 10, 100, gems=gems)
        c = OnlineConfig(**{**cfg.__dict__, "total_steps": total})
        return train_online(sim, agent, c, 1, lambda a, s: None, last, progress=False, fingerprint=fp)

    assert train("a", 2).step == 2
    assert train("a", 3).sessions == 6  # same settings: resumed and extended by one step
    assert train("b", 2).sessions == 4  # other settings: started over


def test_aggregate_over_seeds(tmp_path):
    from slate_rl.core.stats import mean_ci

    paths = []
    for seed, (ret, score) in enumerate([(100.0, 90.0), (110.0, 95.0), (120.0, 97.0)]):
        refs = {"behaviour": {"return_mean": 105.0}, "random": {"return_mean": 40.0 + seed}}
        p = tmp_path / f"seed{seed}.json"
        p.write_text(json.dumps({"env": "e", "algo": "bc", "quality": "expert", "seed": seed, "return_mean": ret,
                                 "normalized_score": score, "references": refs, "n_sessions": 500,
                                 "learning_curve": [[10, ret - 10], [20, ret]]}))
        paths.append(str(p))
    out = tmp_path / "bc.json"
    assert main(["aggregate", "--inputs", *paths, "--output", str(out)]) == 0
    agg = json.loads(out.read_text())
    expected = mean_ci([100.0, 110.0, 120.0])
    assert agg["return_mean"] == pytest.approx(110.0) and agg["return_ci95"] == pytest.approx(expected["ci"])
    assert agg["seeds"] == [0, 1, 2] and agg["n_sessions"] == 1500 and agg["normalized_score"] == pytest.approx(94.0)
    assert agg["references"]["random"]["return_mean"] == pytest.approx(41.0)
    assert agg["learning_curve"] == [[10.0, 100.0], [20.0, 110.0]]
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({**json.loads(Path(paths[0]).read_text()), "algo": "cql"}))
    assert main(["aggregate", "--inputs", paths[0], str(bad), "--output", str(tmp_path / "x.json")]) == 2


SEQUENCE_OPTIONS = {
    "dt": ["--dt-total-steps", "4", "--dt-batch-size", "8", "--dt-context", "4", "--dt-embedding-dim", "16",
           "--dt-layers", "1", "--dt-warmup-steps", "2"],
    "dd": ["--dd-total-steps", "2", "--dd-batch-size", "4", "--dd-horizon", "4", "--dd-dim", "8", "--dd-dim-mults",
           "[1, 2]", "--dd-diffusion-steps", "4", "--dd-sampling-steps", "2", "--dd-hidden", "16"],
}


@pytest.mark.parametrize("algo", ["dt", "dd"])
def test_train_offline_stage_runs_the_sequence_methods(stage_inputs, algo, capsys):
    """Same stage, same result schema, references and score as the TD methods; the method's own number
    of updates, with the validation interval scaled alike (offline 8 steps / eval 4 -> 2 validations)."""
    assert _stage(stage_inputs, algo, SEQUENCE_OPTIONS[algo]) == 0
    d = stage_inputs["dir"]
    res = json.loads((d / f"{algo}.json").read_text())
    for key in ("return_mean", "return_ci95", "n_sessions", "normalized_score", "learning_curve", "inputs",
                "references", "final_metrics"):
        assert key in res, key
    timings = json.loads((d / f"{algo}.timings.json").read_text())  # wall-clock apart from the result
    assert "train_seconds" not in res and timings["train_seconds"] > 0
    total = int(SEQUENCE_OPTIONS[algo][1])
    assert res["offline"]["total_steps"] == total and [s for s, _ in res["learning_curve"]] == [total // 2, total]
    assert res["algo_config"]["total_steps"] == total and res["n_sessions"] == 8
    assert set(res["references"]) >= {"behaviour", "zero_action", "random", "expert"}
    # diagnostics: none of the state-vector or critic ones for a sequence method
    assert [st for st, _ in res["diagnostics"]] == [total // 2, total]
    assert all(v is None for _, diag in res["diagnostics"] for v in diag.values())
    seq = res["sequence"]
    assert seq["max_return_to_go_at_t0"] >= 1.0 and "return_normalisation" in seq
    # the saved policy plays the conditioning table of `slate-rl bench conditioning`
    common = ["bench", "conditioning", "--env", "focused_topdown", "--embeddings-file", str(stage_inputs["table"]),
              "--policy", str(d / f"{algo}.pt"), "--gems", str(stage_inputs["gems"]), "--expert",
              str(stage_inputs["best"]), "--test-sessions", "4", "--device", "cpu"]
    extra = ["--sampling-steps", "1,2"] if algo == "dd" else []
    capsys.readouterr()
    assert main([*common, "--targets", "0.5,1.0", "--output", str(d / "cond.json"), *extra]) == 0
    rows = json.loads((d / "cond.json").read_text())["rows"]
    assert [r["target"] for r in rows] == [0.5, 1.0] * (2 if algo == "dd" else 1)
    assert all(r["n"] == 4 and np.isfinite(r["return_mean"]) for r in rows)
    assert np.isnan(rows[0]["vs_previous"]) and np.isfinite(rows[1]["vs_previous"])  # paired with target 0.5
    verdict = json.loads((d / "cond.json").read_text())["verdict"]
    assert set(verdict) == ({"1", "2"} if algo == "dd" else {"default"})
    assert all(v.startswith(("non-decreasing", "decreasing")) for v in verdict.values())
    capsys.readouterr()
    assert main([*common, "--targets", "0.5,high"]) == 2
    err = capsys.readouterr().err
    assert "target return 'high' must be a finite number" in err and err.count("\n") == 1


@pytest.mark.parametrize("algo", ["bc", "td3bc"])  # td3bc also through --seeds
def test_a_td_method_may_set_its_own_number_of_updates(stage_inputs, algo, capsys):
    """``<algo>.total_steps`` (the quick preset's cql: 500) replaces offline.total_steps for that method, the
    intervals scaled as for dt/dd (offline 8 steps / eval 4 -> 4 steps / eval 2); the result says so."""
    d = stage_inputs["dir"]
    extra = (["--seeds", "0,1", "--policy-output", str(d / "s{seed}.pt"), "--results", str(d / "s{seed}.json")]
             if algo == "td3bc" else [])
    assert _stage(stage_inputs, algo, [f"--{algo}-total-steps", "4", *extra]) == 0
    res = json.loads((d / ("s1.json" if extra else f"{algo}.json")).read_text())
    assert res["offline"]["total_steps"] == 4 and res["offline"]["eval_interval"] == 2
    assert res["algo_config"]["total_steps"] == 4 and [s for s, _ in res["learning_curve"]] == [2, 4]
    capsys.readouterr()
    assert _stage(stage_inputs, algo, [f"--{algo}-total-steps", "0"]) == 2
    err = capsys.readouterr().err
    assert f"{algo}.total_steps must be an integer > 0" in err and err.count("\n") == 1


def test_train_offline_writes_the_same_bytes_twice(stage_inputs):
    """Same seed, same inputs: the result JSON and the policy file are byte-identical (wall-clock figures go
    to the timings file beside the result)."""
    d = stage_inputs["dir"]
    outputs = ("bc.json", "bc.pt")
    assert _stage(stage_inputs, "bc") == 0
    first = {name: (d / name).read_bytes() for name in outputs}
    for name in (*outputs, "bc.timings.json", "bc.pt.last.ckpt"):
        (d / name).unlink(missing_ok=True)
    assert _stage(stage_inputs, "bc") == 0
    for name in outputs:
        assert (d / name).read_bytes() == first[name], name
    assert json.loads((d / "bc.timings.json").read_text())["train_seconds"] > 0


def _sha(path) -> str:  # a digest, not the bytes: pytest's diff of two long byte strings takes minutes
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _digests(folder: Path, *names: str) -> dict[str, str]:
    return {name: _sha(folder / name) for name in names}


RESUME_SCHEDULE = ["--total-steps", "12", "--eval-interval", "6", "--checkpoint-interval", "4"]
"""The schedule of the kill tests: checkpoints at steps 4, 8 and 12, validations at 6 and 12, so a run killed at its
first validation dies after its first checkpoint, one killed at its second after its last checkpoint before the end
(with steps done since in both cases, which the rerun repeats)."""


def _resume_options(inputs, algo: str) -> list[str]:
    """train-offline's options in the kill tests: :data:`RESUME_SCHEDULE` for every method (dt and dd too, at 12
    updates), and the reference returns measured once into a file (the pipeline's --references) instead of by every
    run."""
    assert _references(inputs) == 0
    return [*SEQUENCE_OPTIONS.get(algo, []), *RESUME_SCHEDULE, f"--{algo}-total-steps", "12",
            *(["--dd-sampling-steps", "1", "--dd-dim-mults", "[1]"] if algo == "dd" else []),
            "--references", str(inputs["dir"] / "references.json")]


@pytest.mark.parametrize("algo", ALGOS)
def test_a_killed_run_reruns_to_the_bytes_of_an_uninterrupted_one(stage_inputs, algo, kill_at_call, capsys):
    """`train-offline --seed` killed after its first checkpoint (at the validation of step 6) or after its last one
    before the end (at the validation of step 12), then rerun: the rerun resumes from that checkpoint (step 4, step
    8) and writes the policy file and the results JSON of an uninterrupted run, byte for byte."""
    from slate_rl.offline import diagnostics

    d = stage_inputs["dir"]
    options = _resume_options(stage_inputs, algo)

    def run(name: str) -> int:
        return _stage(stage_inputs, algo, [*options, "--policy-output", str(d / name / "p.pt"), "--results",
                                           str(d / name / "r.json")])

    assert run("whole") == 0
    for name, validation in (("early", 1), ("late", 2)):
        kill_at_call(diagnostics, "run_agent_sessions", validation)  # one call per validation (4 sessions)
        assert run(name) == 130
        assert int(read_resume_checkpoint(d / name / "p.pt.last.ckpt")["step"]) == 4 * validation
        capsys.readouterr()
        assert run(name) == 0
        assert "starting over" not in capsys.readouterr().out  # resumed (the checkpoint is there)
        assert _digests(d / name, "p.pt", "r.json") == _digests(d / "whole", "p.pt", "r.json"), name


@pytest.mark.parametrize("algo", ["bc", "td3bc", "dt"])
def test_train_offline_seeds_write_the_bytes_of_one_run_per_seed(stage_inputs, algo):
    """`--seeds 0,1` (one process, the seeds one after another) writes for each seed the result JSON and the
    policy file of a `--seed` run, byte for byte, and a timings file beside each result."""
    alone_dir, group_dir = stage_inputs["dir"] / "alone", stage_inputs["dir"] / "group"  # same file names: the
    alone_dir.mkdir()  # policy archive holds its own name
    group_dir.mkdir()
    alone = {}
    for seed in (0, 1):
        extra = [*SEQUENCE_OPTIONS.get(algo, []), "--seed", str(seed), "--policy-output",
                 str(alone_dir / f"seed{seed}.pt"), "--results", str(alone_dir / f"seed{seed}.json")]
        assert _stage(stage_inputs, algo, extra) == 0
        alone[seed] = [_sha(alone_dir / f"seed{seed}{ext}") for ext in (".json", ".pt")]
    args = [*SEQUENCE_OPTIONS.get(algo, []), "--seeds", "0,1", "--policy-output", str(group_dir / "seed{seed}.pt"),
            "--results", str(group_dir / "seed{seed}.json")]
    assert _stage(stage_inputs, algo, args) == 0
    for seed in (0, 1):
        assert [_sha(group_dir / f"seed{seed}{ext}") for ext in (".json", ".pt")] == alone[seed], seed
        assert (group_dir / f"seed{seed}.timings.json").is_file()
        assert (group_dir / f"seed{seed}.pt.last.ckpt").is_file()
    assert alone[0] != alone[1]


def test_train_offline_seeds_resume_each_seed_and_check_their_options(stage_inputs, capsys):
    """A rerun of a group resumes every seed from its own checkpoint (a finished seed only re-evaluates); --seed and
    --seeds exclude each other and --seeds needs {seed} in the output paths."""
    d = stage_inputs["dir"]
    args = ["--seeds", "0,1", "--policy-output", str(d / "g{seed}.pt"), "--results", str(d / "g{seed}.json")]
    assert _stage(stage_inputs, "bc", args) == 0
    first = [json.loads((d / f"g{seed}.json").read_text()) for seed in (0, 1)]
    for seed in (0, 1):  # Snakemake deletes the outputs of a failed job; the resume checkpoints stay
        (d / f"g{seed}.json").unlink()
        (d / f"g{seed}.pt").unlink()
    capsys.readouterr()
    assert _stage(stage_inputs, "bc", args) == 0
    out = capsys.readouterr().out
    assert "starting over" not in out and "bc: step" not in out  # both seeds resumed at their last step
    for seed, before in zip((0, 1), first, strict=True):
        after = json.loads((d / f"g{seed}.json").read_text())
        assert after["seed"] == seed and after["learning_curve"] == before["learning_curve"]
    assert _stage(stage_inputs, "bc", ["--seeds", "0,1"]) != 0  # outputs without {seed}
    assert "must contain {seed}" in capsys.readouterr().err
    assert _stage(stage_inputs, "bc", ["--seeds", "0,0", *args[2:]]) != 0
    assert "distinct" in capsys.readouterr().err


@pytest.mark.parametrize("keep", [False, True])
def test_train_offline_flushes_denormals_while_training_on_cpu(stage_inputs, monkeypatch, keep):
    """Subnormal floats read as zero while a CPU run trains (several times faster once trained networks produce
    them), unless --keep-denormals; IEEE arithmetic is back afterwards."""
    from slate_rl.stages import train_offline

    seen = []
    tiny = torch.tensor([1e-39], dtype=torch.float32)  # subnormal in float32
    monkeypatch.setattr(train_offline, "train_seed", lambda *a, **k: seen.append(float((tiny * 1.0).item())))
    assert _stage(stage_inputs, "bc", ["--keep-denormals"] if keep else []) == 0
    assert seen == ([pytest.approx(1e-39, rel=1e-3)] if keep else [0.0])
    assert float((tiny * 1.0).item()) > 0.0


@pytest.mark.parametrize("algo", ["iql", "dt"])
def test_algo_from_policy_rebuilds_a_trained_method_from_its_file(stage_inputs, expert, algo):
    """offline.registry.algo_from_policy rebuilds the method a policy file holds from the settings stored in it
    (method, config, gamma, updates): its networks equal the saved ones, it acts like the algorithm load_policy
    fills with the run's own settings, and a config override reaches it; a file that is no policy: one error."""
    import copy

    from slate_rl.core.errors import ArtifactError
    from slate_rl.offline.base import Normalizer
    from slate_rl.offline.config import ALGO_CONFIGS
    from slate_rl.offline.policy import load_policy, read_policy
    from slate_rl.offline.registry import algo_from_policy, make_algo
    from slate_rl.offline.sequence import SequenceAlgo, SessionSpec

    extra = SEQUENCE_OPTIONS.get(algo, [])
    assert _stage(stage_inputs, algo, extra) == 0
    path = stage_inputs["dir"] / f"{algo}.pt"
    ranker, session = expert.ranker, SessionSpec(100, 1000, 10)
    rebuilt, normalizer, meta = algo_from_policy(path, ranker.action_center, ranker.action_scale,
                                                 copy.deepcopy(expert.actor_belief), session)
    assert meta["algo"] == algo and meta["seed"] == 0
    payload, _ = read_policy(path)
    for k, v in payload["networks"].items():
        assert torch.equal(rebuilt.state_dict()["modules"][k].cpu(), v), k
    cfg = from_dict(ALGO_CONFIGS[algo], meta["algo_config"], algo)
    by_hand = make_algo(algo, normalizer.mean.shape[0], ranker.action_center, ranker.action_scale,
                        meta["offline"]["gamma"], meta["offline"]["total_steps"], {algo: cfg}, session)
    own = Normalizer(normalizer.mean.shape[0])
    load_policy(path, by_hand, own, copy.deepcopy(expert.actor_belief))
    states = torch.randn(5, normalizer.mean.shape[0])
    rebuilt.eval(), by_hand.eval()
    if isinstance(rebuilt, SequenceAlgo):
        assert isinstance(by_hand, SequenceAlgo)
        outs = []
        for a, n in ((rebuilt, normalizer), (by_hand, own)):
            torch.manual_seed(3)
            ctx = a.begin(5, None)
            outs.append(a.step(ctx, n(states), torch.zeros(5, 10, dtype=torch.long), torch.zeros(5, 10),
                               torch.zeros(5))[0])
        torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
        changed, _, _ = algo_from_policy(path, ranker.action_center, ranker.action_scale,
                                         copy.deepcopy(expert.actor_belief), session, {"target_return": 0.5})
        assert changed.cfg.target_return == 0.5
    else:
        torch.testing.assert_close(rebuilt.act(normalizer(states)), by_hand.act(own(states)), rtol=0, atol=0)
    with pytest.raises(ArtifactError):
        algo_from_policy(stage_inputs["gems"], ranker.action_center, ranker.action_scale,
                         copy.deepcopy(expert.actor_belief), session)
