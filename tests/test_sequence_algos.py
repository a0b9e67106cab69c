"""Conformance of the sequence methods (Decision Transformer, Decision Diffuser): the TD family's checks
(every parameter moves, bit-identical save/load and resume, actions in the box), window sampling,
return conditioning on a problem whose answer is known, and one clear error per bad input."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import Tensor

from slate_rl.core.config import from_dict
from slate_rl.core.errors import ArtifactError, ConfigError
from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.offline.config import with_total_steps
from slate_rl.offline.dd import DDConfig
from slate_rl.offline.dt import DTConfig
from slate_rl.offline.loop import OfflineConfig, train_offline
from slate_rl.offline.registry import ALGO_CONFIGS, SEQUENCE_ALGOS, make_algo
from slate_rl.offline.sequence import SequenceAlgo, SessionSpec, returns_to_go

OBS, ACT, H, ITEMS, K = 6, 4, 12, 30, 3
SESSION = SessionSpec(H, ITEMS, K)
SMALL = {
    "dt": DTConfig(batch_size=16, context=5, embedding_dim=32, layers=2, heads=2, warmup_steps=10),
    "dt_raw": DTConfig(batch_size=16, context=5, embedding_dim=32, layers=1, warmup_steps=10, states="raw",
                       item_dim=4),
    "dd": DDConfig(batch_size=8, horizon=4, dim=8, dim_mults=(1, 2), diffusion_steps=20, sampling_steps=20,
                   ema_every=1, ema_start=2, hidden=32),
    "dd_strided": DDConfig(batch_size=8, horizon=4, dim=8, dim_mults=(1, 2), diffusion_steps=20, sampling_steps=5,
                           hidden=32),
}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _box() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(ACT, generator=g), 0.5 + torch.rand(ACT, generator=g)


def _algo(case: str, seed: int = 0, **changes: object) -> SequenceAlgo:
    name = case.split("_")[0]
    torch.manual_seed(seed)
    center, scale = _box()
    algo = make_algo(name, OBS, center, scale, 0.9, 100, {name: replace(SMALL[case], **changes)}, SESSION)
    assert isinstance(algo, SequenceAlgo)
    return algo


def _buffer(episodes: int = 40, seed: int = 0, horizon: int = H) -> EpisodeBuffer:
    """Sessions of two kinds, alternating: the action's sign is + with probability 0.9 in one kind,
    0.1 in the other (normalised actions +-0.6 plus noise); the reward is 1 when the first action
    dimension is positive; the next state shows the action (s_{t+1} = M a~_t + noise), so a state
    tells the last action but not the kind of session: only the return to go does."""
    g = torch.Generator().manual_seed(seed)
    center, scale = _box()
    p = torch.where(torch.arange(episodes) % 2 == 0, 0.9, 0.1)
    sign = torch.where(torch.rand(episodes, horizon, generator=g) < p[:, None], 1.0, -1.0)
    u = (0.6 * sign[..., None] + 0.1 * torch.randn(episodes, horizon, ACT, generator=g)).clamp(-1, 1)
    proj = torch.randn(ACT, OBS, generator=g) / 2
    states = 0.05 * torch.randn(episodes, horizon + 1, OBS, generator=g)
    states[:, 1:] += u @ proj
    buf = EpisodeBuffer(episodes, horizon, K, ACT, extras={"observations": (OBS,), "next_observations": (OBS,)})
    slates = torch.randint(0, ITEMS, (episodes, horizon + 1, K), generator=g)
    buf.add({"slates": slates, "clicks": torch.rand(episodes, horizon + 1, K, generator=g) < 0.3,
             "actions": center + scale * u, "rewards": (u[..., 0] > 0).float(),
             "observations": states[:, :-1], "next_observations": states[:, 1:]})
    return buf


def _batch(algo: SequenceAlgo, seed: int = 0) -> dict[str, Tensor]:
    return algo.sample(_BUF, algo.batch_windows, torch.Generator().manual_seed(seed))


_BUF = _buffer()


def _fitted(case: str, seed: int = 0) -> SequenceAlgo:
    algo = _algo(case, seed)
    algo.fit_dataset(_BUF)
    return algo


def _trainable(algo: SequenceAlgo) -> dict[str, Tensor]:
    return {n: p.detach().clone() for n, p in algo.named_parameters() if p.requires_grad}


def _rollout(algo: SequenceAlgo, states: Tensor, target: float | None = None) -> Tensor:
    """Actions of ``states`` (B, T, OBS) fed step by step (rewards 1), (B, T, ACT)."""
    b, steps = states.shape[:2]
    ctx = algo.begin(b, target)
    out = []
    slates, clicks = torch.zeros(b, K, dtype=torch.long), torch.zeros(b, K, dtype=torch.bool)
    for t in range(steps):
        a, ctx = algo.step(ctx, states[:, t], slates, clicks, torch.ones(b) if t else torch.zeros(b))
        out.append(a)
    return torch.stack(out, 1)


def test_registry_lists_the_sequence_family():
    assert SEQUENCE_ALGOS == ("dt", "dd")
    assert ALGO_CONFIGS["dt"] is DTConfig and ALGO_CONFIGS["dd"] is DDConfig


def test_returns_to_go_and_windows():
    r = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.allclose(returns_to_go(r, 1.0), torch.tensor([[6.0, 5.0, 3.0]]))
    assert torch.allclose(returns_to_go(r, 0.5), torch.tensor([[1 + 1 + 0.75, 2 + 1.5, 3.0]]))
    algo = _fitted("dd")
    batch = algo.sample(_BUF, 256, torch.Generator().manual_seed(0))
    t = batch["timesteps"]
    assert t.shape == (256, 4) and bool((t[:, 1:] - t[:, :-1] == 1).all()) and int(t[:, 0].max()) == H - 1
    assert torch.equal(batch["mask"], (t < H).float()) and torch.equal(batch["state_mask"], (t <= H).float())
    assert bool((batch["actions"][batch["mask"] == 0] == 0).all())
    full = returns_to_go(_BUF.data["rewards"], 0.99)
    assert torch.allclose(algo.rtg_max, full.max(0).values.clamp(min=1.0))
    # the state after the last action sits at index H; padding beyond repeats it
    last = (t[:, 0] == H - 1).nonzero()[0, 0]
    assert torch.equal(batch["states"][last, 1], batch["states"][last, 3])


@pytest.mark.parametrize("case", SMALL)
def test_every_trainable_parameter_changes(case):
    algo = _fitted(case)
    before = _trainable(algo)
    for i in range(3):
        algo.update(_batch(algo, i))
    after = _trainable(algo)
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert not unchanged, f"{case}: parameters no update moved: {unchanged}"
    opt_params = {id(p) for opt in algo.optimizers().values() for g in opt.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in algo.parameters() if p.requires_grad}


def test_dd_ema_networks_get_no_gradient_and_follow_the_schedule():
    algo = _fitted("dd")  # ema_every 1, ema_start 2: a copy at step 1, an average from step 2
    assert all(not p.requires_grad for p in [*algo.unet_ema.parameters(), *algo.inverse_ema.parameters()])
    algo.update(_batch(algo, 0))
    for a, b in zip(algo.unet_ema.parameters(), algo.unet.parameters(), strict=True):
        assert torch.equal(a, b)
    old = [p.clone() for p in algo.unet_ema.parameters()]
    algo.update(_batch(algo, 1))
    for o, a, b in zip(old, algo.unet_ema.parameters(), algo.unet.parameters(), strict=True):
        torch.testing.assert_close(a, o + 0.005 * (b - o), rtol=1e-5, atol=1e-7)
        assert a.grad is None


@pytest.mark.parametrize("case", SMALL)
def test_save_load_round_trip_is_bit_identical(case):
    algo = _fitted(case)
    for i in range(3):
        algo.update(_batch(algo, i))
    buffer = io.BytesIO()
    torch.save(algo.state_dict(), buffer)
    buffer.seek(0)
    other = _algo(case, seed=1)
    other.load_state_dict(torch.load(buffer, weights_only=True))
    assert int(other.updates) == 3 and torch.equal(other.rtg_max, algo.rtg_max)
    states = torch.randn(5, 3, OBS)
    torch.manual_seed(4)
    a = _rollout(algo.eval(), states)
    torch.manual_seed(4)
    b = _rollout(other.eval(), states)
    assert torch.equal(a, b)
    algo.train(), other.train()
    batch = _batch(algo, 9)
    torch.manual_seed(7)
    m1 = algo.update(batch)
    torch.manual_seed(7)
    m2 = other.update(batch)
    for k in m1:
        assert torch.equal(m1[k], m2[k]), k
    for (n, p), q in zip(algo.state_dict()["modules"].items(), other.state_dict()["modules"].values(), strict=True):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("case", ["dt", "dd"])
def test_resume_after_a_kill_ends_bit_identical(case, tmp_path):
    cfg = OfflineConfig(total_steps=6, batch_size=1, eval_interval=2, checkpoint_interval=2, log_interval=1)

    def run(last, validate):
        algo = _algo(case)
        return algo, train_offline(algo, _buffer(), cfg, 3, validate, last, progress=False, fingerprint="fp")

    full, full_state = run(tmp_path / "a.ckpt", lambda: 1.0)
    calls = []

    def killing():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return 1.0

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.ckpt", killing)
    resumed, state = run(tmp_path / "b.ckpt", lambda: 1.0)
    assert state.step == 6 and state.curve == full_state.curve and state.metrics == full_state.metrics
    for (n, p), q in zip(full.state_dict()["modules"].items(), resumed.state_dict()["modules"].values(), strict=True):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("case", SMALL)
def test_actions_stay_in_the_box(case):
    algo = _fitted(case)
    algo.update(_batch(algo))
    actions = _rollout(algo.eval(), 100.0 * torch.randn(16, H, OBS))
    center, scale = _box()
    assert actions.shape == (16, H, ACT) and not actions.requires_grad
    assert bool(((actions >= center - scale) & (actions <= center + scale)).all())
    assert not algo.acts_on_states
    with pytest.raises(NotImplementedError, match="per-user context only"):
        algo.act(torch.zeros(2, OBS))


def test_dt_context_window_slides_and_is_causal():
    """At step t the policy sees the last ``context`` steps; the prediction at t does not depend on later steps."""
    algo = _fitted("dt").eval()
    batch = _batch(algo)
    full = algo.predict(batch)
    cut = {k: v[:, :3] for k, v in batch.items()}
    torch.testing.assert_close(algo.predict(cut), full[:, :3])
    states = torch.randn(2, 8, OBS)
    acts = _rollout(algo, states)
    ctx = algo.begin(2)
    for t in range(8):
        a, ctx = algo.step(ctx, states[:, t], torch.zeros(2, K, dtype=torch.long), torch.zeros(2, K, dtype=torch.bool),
                           torch.ones(2) if t else torch.zeros(2))
    assert ctx["t"] == 8 and torch.equal(a, acts[:, -1])
    expected = 1.0 * algo.rtg_max[0] - 7.0  # the return-to-go dropped by each reward
    torch.testing.assert_close(ctx["returns"][:, 7], expected.expand(2))


def _train(case: str, steps: int, last: Path) -> SequenceAlgo:
    algo = _algo(case, 0)
    buf = _buffer(episodes=64, seed=1)
    cfg = OfflineConfig(total_steps=steps, batch_size=1, eval_interval=steps, checkpoint_interval=steps,
                        log_interval=steps)
    train_offline(algo, buf, cfg, 0, lambda: 0.0, last, progress=False)
    return algo.eval()


@pytest.mark.parametrize(("case", "key", "ratio"), [("dt", "actor_loss", 0.7), ("dd", "inverse_loss", 0.7),
                                                   ("dd", "diffusion_loss", 0.85)])
def test_losses_fall_on_a_tiny_problem(case, key, ratio):
    """60 updates at a higher learning rate cut each loss on a fixed batch with fixed draws (noise, steps);
    the diffusion loss falls slowest (0.78 -> 0.58 at 60 updates, 0.35 at 200)."""
    algo = _algo(case, lr=3e-3, **({"dim": 32} if case == "dd" else {}))
    algo.fit_dataset(_BUF)
    batch = _batch(algo, 99)

    def loss() -> float:
        torch.manual_seed(0)
        return float(algo.losses(batch)[1][key])

    before = loss()
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        algo.update(algo.sample(_BUF, algo.batch_windows, g))
    after = loss()
    assert after < ratio * before, f"{case} {key}: {before:.4f} -> {after:.4f}"


@pytest.mark.slow
@pytest.mark.parametrize(("case", "steps", "changes"), [("dt", 300, {"lr": 1e-3}),
                                                      ("dd", 1500, {"lr": 1e-3, "dim": 32})])
def test_return_conditioning_on_a_known_problem(case, steps, changes, monkeypatch, tmp_path):
    """Two kinds of sessions, mostly + actions (reward 1) or mostly - actions (reward 0), and states that
    do not tell them apart: conditioned on the best return the first action dimension is positive,
    on zero return negative."""
    monkeypatch.setitem(SMALL, case, replace(SMALL[case], **changes))
    algo = _train(case, steps, tmp_path / "last.ckpt")
    torch.manual_seed(0)
    states = _buffer(episodes=16, seed=5).data["observations"][:, :4]
    high = algo.normalise(_rollout(algo, states, 1.0))[..., 0].mean()
    low = algo.normalise(_rollout(algo, states, 0.0))[..., 0].mean()
    assert high > 0.2 and low < -0.2, f"{case}: first action dimension {float(high):.2f} (target 1), {float(low):.2f}"


# ------------------------------------------------------------------ bad input: one clear error each
def test_a_dataset_without_whole_sessions_is_one_clear_error():
    algo = _algo("dt")
    with pytest.raises(ArtifactError, match=f"sessions of 7 steps but the environment's sessions last {H}"):
        algo.fit_dataset(_buffer(horizon=7))


def test_a_context_longer_than_a_session_is_one_clear_error():
    with pytest.raises(ConfigError, match=rf"dt.context \(13\) is longer than a session \({H} steps\)"):
        _algo("dt", context=13)
    with pytest.raises(ConfigError, match="dd.horizon"):
        DDConfig(horizon=10, dim_mults=(1, 4, 8))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "high", None, True])
def test_a_target_return_that_is_not_a_number_is_one_clear_error(value):
    with pytest.raises(ConfigError, match="target"):
        from_dict(DTConfig, {"target_return": value}, "dt")
    algo = _fitted("dd")
    if value is not None:  # None means "the configured default" when acting
        with pytest.raises(ConfigError, match="target return must be a finite number"):
            algo.begin(2, value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("cls", "kwargs", "key"), [
    (DTConfig, {"heads": 3}, "dt.embedding_dim"), (DTConfig, {"residual_dropout": 1.0}, "dt.residual_dropout"),
    (DTConfig, {"warmup_steps": 0}, "dt.warmup_steps"), (DDConfig, {"sampling_steps": 300}, "dd.sampling_steps"),
    (DDConfig, {"dim": 12}, "dd.dim"), (DDConfig, {"condition_dropout": 1.0}, "dd.condition_dropout"),
    (DDConfig, {"ema_decay": 0.0}, "dd.ema_decay"), (DDConfig, {"dim_mults": [1, 0]}, "dd.dim_mults"),
])
def test_config_validation_names_the_key(cls, kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        cls(**kwargs)


def test_sequence_schedule_scales_the_intervals():
    cfg = with_total_steps(OfflineConfig(), 100_000, 64)
    assert (cfg.total_steps, cfg.batch_size, cfg.eval_interval, cfg.checkpoint_interval, cfg.log_interval) == \
        (100_000, 64, 5_000, 5_000, 100)


def test_conditioning_verdict_reads_the_paired_differences():
    """`bench conditioning` calls a table non-decreasing unless some target's return is below a lower
    target's by a paired difference significant at 5%."""
    from slate_rl.bench.sequence import conditioning_verdict

    def rows(*diffs: tuple[float, float, float, float]) -> list[dict[str, float]]:
        nan = float("nan")
        first = {"target": 0.25, "vs_previous": nan, "vs_previous_ci95": nan, "worst_vs_lower": nan,
                 "worst_vs_lower_ci95": nan, "worst_vs_lower_target": nan}
        return [first, *({"target": 0.25 * (i + 2), "vs_previous": m, "vs_previous_ci95": c, "worst_vs_lower": wm,
                          "worst_vs_lower_ci95": wc, "worst_vs_lower_target": 0.25}
                         for i, (m, c, wm, wc) in enumerate(diffs))]

    assert conditioning_verdict(rows((-1.0, 2.0, -1.0, 2.0), (0.5, 1.0, -0.5, 1.0))).startswith("non-decreasing (flat")
    assert conditioning_verdict(rows((-1.0, 2.0, -1.0, 2.0), (30.0, 5.0, 29.0, 5.0))) == \
        "non-decreasing (increasing: +30.00 +- 5.00 at 0.75)"
    # each step within noise, but 0.75 is surely below 0.25: decreasing
    assert conditioning_verdict(rows((-0.5, 0.7, -0.5, 0.7), (-0.5, 0.7, -1.0, 0.6))) == \
        "decreasing: the return at target 0.75 is 1.00 +- 0.60 (paired 95% CI) below target 0.25"


def test_a_relabelled_policy_decodes_only_with_the_gems_it_was_trained_with(tmp_path):
    """`bench conditioning` takes the relabelling GeMS's path from the policy file: the file there must have
    the sha256 recorded at training, else one ArtifactError naming both."""
    from slate_rl.bench.sequence import relabel_gems
    from slate_rl.core.io import file_sha256

    gems = tmp_path / "other.ckpt"
    gems.write_bytes(b"the GeMS the policy was trained with")
    relabel = {"gems": str(gems), "sha256": file_sha256(gems)}
    assert relabel_gems(tmp_path / "dt.pt", relabel) == str(gems)
    gems.write_bytes(b"another file at that path")
    with pytest.raises(ArtifactError, match=r"relabel\.sha256") as info:
        relabel_gems(tmp_path / "dt.pt", relabel)
    assert str(info.value).startswith(f"{gems}: sha256") and "dt.pt" in str(info.value)
    gems.unlink()
    with pytest.raises(ArtifactError, match="not found"):
        relabel_gems(tmp_path / "dt.pt", relabel)
    with pytest.raises(ArtifactError, match="field 'relabel'"):
        relabel_gems(tmp_path / "dt.pt", {"gems": str(gems)})
