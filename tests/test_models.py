"""MF, GeMS and the rankers: loss normalisation, learning floors on tiny data, checkpoints; GeMS's published
defaults (the training sample uses the variance, pretraining walks the slates in the published order)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from slate_rl.core.config import replace
from slate_rl.core.errors import ArtifactError
from slate_rl.data.batches import TensorBatches
from slate_rl.data.logs import LoggedSessions
from slate_rl.models.config import GeMSConfig, gems_config_from_tag
from slate_rl.models.gems import GeMS, action_bounds, gems_loss
from slate_rl.models.gems_system import GeMSSystem
from slate_rl.models.mf import MFSystem, bpr_loss, interactions
from slate_rl.models.rankers import GeMSRanker, KArgmax, TopK, load_gems_ranker, save_gems_ranker
from slate_rl.models.training import evaluate_batches, fit
from slate_rl.sim.policies import EpsilonGreedyOracle
from slate_rl.sim.protocol import make_simulator
from slate_rl.sim.rollout import run_sessions
from slate_rl.stages.pretrain_gems import examples


@pytest.fixture(scope="module")
def tiny_logs() -> LoggedSessions:
    sim = make_simulator("focused_topdown")
    out = run_sessions(sim, EpsilonGreedyOracle(1000, 10, 0.5), 400, seed=11, batch_size=400, record=True)
    return LoggedSessions(out.slates, out.clicks, out.reset_slates, out.reset_clicks, out.returns.astype(np.float32),
                          {"env": "focused_topdown", "env_config": {"num_items": 1000}})


def test_kl_is_averaged_over_latent_dimensions():
    torch.manual_seed(0)
    model = GeMS(latent_dim=16)
    slates = torch.randint(0, 1000, (32, 10))
    clicks = torch.rand(32, 10) < 0.2
    _, m0 = gems_loss(model, slates, clicks, beta=0.0, lambda_click=0.5, sample=False)
    mu, logvar = model.encode(slates, clicks)
    kl_sum_dims = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).sum(dim=1).mean()
    assert m0["kl"].item() == pytest.approx(kl_sum_dims.item() / 16, rel=1e-5)
    loss2, m2 = gems_loss(model, slates, clicks, beta=2.0, lambda_click=0.5, sample=False)
    assert loss2.item() == pytest.approx(m2["ce"].item() + 0.5 * m2["bce"].item() + 2.0 * m2["kl"].item(), rel=1e-5)


def test_item_table_gets_no_gradient_through_the_slate_head():
    model = GeMS(latent_dim=8)
    slate_logits, _ = model.decode(torch.randn(4, 8))
    slate_logits.sum().backward()
    assert model.items.weight.grad is None or torch.count_nonzero(model.items.weight.grad) == 0
    assert model.slate_head.weight.grad is not None


def test_frozen_item_tables_stay_frozen():
    table = torch.rand(1000, 20)
    system = GeMSSystem(latent_dim=8, item_table_mode="mf_fixed", item_table=table)
    assert torch.equal(system.model.items.weight, table) and not system.model.items.weight.requires_grad
    opt = system.configure_optimizers()
    assert all(p is not system.model.items.weight for g in opt.param_groups for p in g["params"])


def test_decoding_is_batched_and_deterministic():
    torch.manual_seed(1)
    model = GeMS(latent_dim=8).eval()
    z = torch.randn(64, 8)
    a, b = model.rank(z), model.rank(z)
    assert a.shape == (64, 10) and a.dtype == torch.int64 and torch.equal(a, b)
    assert torch.equal(model.rank(z[5:6]), a[5:6])


def test_gems_tag_round_trip():
    cfg = GeMSConfig(latent_dim=16, beta=0.5, lambda_click=0.2, item_table="ideal", seed=3)
    assert gems_config_from_tag(cfg.tag) == cfg


def _gems_fit(tiny_logs, tmp_path, epochs: int, **kw):
    n_val = 40
    train, val = examples(tiny_logs, slice(n_val, None)), examples(tiny_logs, slice(0, n_val))
    system = GeMSSystem(latent_dim=16, **kw)
    fit(system, TensorBatches(train, 256, seed=0), TensorBatches(val, 4096, shuffle=False), tmp_path / "work",
        torch.device("cpu"), max_epochs=epochs, logger_mode="disabled", progress=False)
    model = system.model.eval()
    metrics = evaluate_batches(lambda b: gems_loss(model, b["slates"], b["clicks"], 1.0, 0.5, sample=False)[1],
                               TensorBatches(val, 4096, shuffle=False), torch.device("cpu"))
    return system, metrics


@pytest.mark.slow
def test_gems_learns_on_tiny_logs_without_posterior_collapse(tiny_logs, tmp_path):
    """36k examples, 3 epochs: the spec measured ~9% slot accuracy after 3 epochs on 180k
    examples; on 5x less data we measured 2.7% and require 20x chance (0.02) and a KL clearly
    above zero."""
    _, metrics = _gems_fit(tiny_logs, tmp_path, epochs=3)
    assert metrics["slot_accuracy"] >= 0.02, metrics
    assert metrics["kl"] > 0.05, metrics
    assert metrics["click_accuracy"] > 0.85, metrics


def test_gems_training_resumes_from_last_checkpoint(tiny_logs, tmp_path):
    small = LoggedSessions(tiny_logs.slates[:60], tiny_logs.clicks[:60], tiny_logs.reset_slates[:60],
                           tiny_logs.reset_clicks[:60], tiny_logs.returns[:60], tiny_logs.metadata)
    train, val = examples(small, slice(10, None)), examples(small, slice(0, 10))
    work = tmp_path / "work"

    def run(epochs):
        system = GeMSSystem(latent_dim=4)
        return fit(system, TensorBatches(train, 1024, seed=0), TensorBatches(val, 4096, shuffle=False), work,
                   torch.device("cpu"), max_epochs=epochs, logger_mode="disabled", progress=False)

    first = run(1)  # a run "killed" after its first epoch leaves last.ckpt
    assert (work / "last.ckpt").is_file()
    second = run(2)  # the rerun continues from there instead of starting over
    steps_per_epoch = len(TensorBatches(train, 1024))
    assert first["global_steps"] == steps_per_epoch
    assert second["global_steps"] == 2 * steps_per_epoch


def test_mf_ranks_held_out_clicks_above_negatives(tiny_logs, tmp_path):
    train, val = interactions(tiny_logs, 0.1, seed=0)
    assert len(val["pos"]) > 100
    system = MFSystem(tiny_logs.num_sessions, 1000, 20, lr=1e-2)
    fit(system, TensorBatches(train, 256, seed=0), TensorBatches(val, 8192, shuffle=False), tmp_path / "mf",
        torch.device("cpu"), max_epochs=4, patience=3, logger_mode="disabled", progress=False)
    with torch.no_grad():
        _, m = bpr_loss(system.model, val["users"], val["pos"], val["neg"])
    assert m["auc"].item() >= 0.75


def test_mf_validation_clicks_are_held_out(tiny_logs):
    train, val = interactions(tiny_logs, 0.1, seed=0)
    n_val = 40
    assert int(val["users"].max()) < n_val
    total = int(tiny_logs.clicks.sum())
    assert len(train["pos"]) + len(val["pos"]) == total


def _ranker(latent_dim=8) -> GeMSRanker:
    torch.manual_seed(2)
    gems = GeMS(latent_dim=latent_dim)
    center, scale = action_bounds(gems, torch.randint(0, 1000, (100, 10)), torch.rand(100, 10) < 0.2)
    return GeMSRanker(gems, center, scale, {"env": "focused_topdown"})


def test_bounds_cover_the_encodings_and_survive_a_round_trip(tmp_path):
    ranker = _ranker()
    low, high = ranker.bounds()
    assert (high > low).all() and ranker.action_dim == 8
    path = tmp_path / "g.ckpt"
    save_gems_ranker(path, ranker)
    back = load_gems_ranker(path, num_items=1000, latent_dim=8)
    assert torch.equal(back.action_center, ranker.action_center) and torch.equal(back.action_scale, ranker.action_scale)
    z = torch.randn(32, 8)
    assert torch.equal(back.rank(z), ranker.rank(z))
    assert back.meta == {"env": "focused_topdown"}


@pytest.mark.parametrize(
    ("mutate", "kwargs", "field"),
    [
        (None, {"num_items": 500}, "architecture.num_items"),
        (None, {"latent_dim": 32}, "architecture.latent_dim"),
        (lambda p: p.pop("action_scale"), {}, "action_scale"),
        (lambda p: p.__setitem__("action_center", torch.zeros(3)), {}, "action_center"),
        (lambda p: p.__setitem__("format", "other"), {}, "format"),
        (lambda p: p["state_dict"].pop("click_head.bias"), {}, "state_dict"),
    ],
)
def test_mismatched_checkpoint_names_the_field(tmp_path, mutate, kwargs, field):
    path = tmp_path / "g.ckpt"
    save_gems_ranker(path, _ranker())
    if mutate is not None:
        payload = torch.load(path, weights_only=True)
        mutate(payload)
        torch.save(payload, path)
    with pytest.raises(ArtifactError, match=field.replace(".", r"\.")):
        load_gems_ranker(path, **kwargs)


def test_topk_and_kargmax_rank_by_dot_product():
    torch.manual_seed(3)
    items = torch.rand(1000, 20)
    a = torch.randn(5, 20)
    slates = TopK(items).rank(a)
    scores = a @ items.T
    for i in range(5):
        assert set(slates[i].tolist()) == set(scores[i].argsort(descending=True)[:10].tolist())
    k = KArgmax(items)
    assert k.action_dim == 200 and TopK(items).action_dim == 20
    acts = torch.randn(5, 200)
    slates = k.rank(acts)
    assert torch.equal(slates[:, 3], (acts[:, 60:80] @ items.T).argmax(dim=1))
    low, high = k.bounds()
    assert torch.allclose(low[:20], items.min(dim=0).values, atol=1e-6)
    assert torch.allclose(high[:20], items.max(dim=0).values, atol=1e-6)


def test_logger_modes(monkeypatch, tmp_path):
    from slate_rl.core.errors import ConfigError
    from slate_rl.core.logger import RunLogger, lightning_logger, resolve_logger_mode

    monkeypatch.delenv("SLATE_RL_LOGGER", raising=False)
    assert resolve_logger_mode(None) == "offline"
    monkeypatch.setenv("SLATE_RL_LOGGER", "disabled")
    assert resolve_logger_mode("cloud") == "disabled"
    assert lightning_logger("x") is False
    log = RunLogger("x", {"a": 1})
    log.log({"loss": 1.0}, step=0)
    log.finish()
    monkeypatch.setenv("SLATE_RL_LOGGER", "nonsense")
    with pytest.raises(ConfigError, match="nonsense"):
        resolve_logger_mode(None)


@pytest.mark.parametrize("item_table", ["scratch", "mf_fixed"])
def test_pretrain_gems_stage_writes_checkpoint_and_metrics(tiny_logs, tmp_path, monkeypatch, item_table):
    from slate_rl.cli import main
    from slate_rl.data.logs import save_logs

    monkeypatch.setenv("SLATE_RL_LOGGER", "disabled")
    small = LoggedSessions(tiny_logs.slates[:50], tiny_logs.clicks[:50], tiny_logs.reset_slates[:50],
                           tiny_logs.reset_clicks[:50], tiny_logs.returns[:50],
                           {"env": "focused_topdown", "env_config": make_simulator("focused_topdown").config.__dict__})
    logs_path = tmp_path / "logs.npz"
    save_logs(logs_path, small)
    ckpt, metrics = tmp_path / "g.ckpt", tmp_path / "g.json"
    extra = []
    if item_table == "mf_fixed":  # MF tables have negative entries, unlike the simulator's
        mf_path = tmp_path / "mf.npy"
        np.save(mf_path, np.random.default_rng(0).normal(size=(1000, 20)).astype(np.float32))
        extra = ["--item-table", "mf_fixed", "--item-embeddings", str(mf_path)]
    rc = main(["pretrain-gems", "--logs", str(logs_path), "--latent-dim", "4", "--epochs", "1", "--batch-size", "512",
               "--bounds-sessions", "10", "--device", "cpu", "--no-progress", "--output", str(ckpt),
               "--metrics", str(metrics), *extra])
    assert rc == 0
    m = json.loads(metrics.read_text())
    for key in ("val_loss", "val_slot_accuracy", "val_click_accuracy", "action_center", "action_scale", "inputs"):
        assert key in m
    ranker = load_gems_ranker(ckpt, num_items=1000, latent_dim=4)
    assert ranker.meta["tag"] == m["tag"]
    assert not (tmp_path / "g.ckpt.work").exists()


# --------------------------------------------------------------------------- the published defaults


def test_gems_training_sample_uses_the_variance_by_default() -> None:
    """z = mu + eps * exp(logvar) (published) by default; exp(logvar / 2) with sample_scale=std.
    Checked through the decoder input: with the same eps the two samples differ as var vs std."""
    torch.manual_seed(0)
    model = GeMS(latent_dim=4)
    slates, clicks = torch.randint(0, 1000, (32, 10)), torch.rand(32, 10) < 0.3
    seen: list[torch.Tensor] = []
    handle = model.decoder.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    mu, logvar = model.encode(slates, clicks)
    for scale in ("variance", "std"):
        torch.manual_seed(1)
        gems_loss(model, slates, clicks, 1.0, 0.5, sample_scale=scale)
    handle.remove()
    torch.manual_seed(1)
    eps = torch.randn_like(mu)
    torch.testing.assert_close(seen[0], mu + eps * logvar.exp())
    torch.testing.assert_close(seen[1], mu + eps * (0.5 * logvar).exp())
    assert GeMSConfig().sample_scale == "variance"
    std = replace(GeMSConfig(), sample_scale="std")
    assert std.tag.endswith("_std") and gems_config_from_tag(std.tag) == std
    assert gems_config_from_tag(GeMSConfig().tag) == GeMSConfig()
    with pytest.raises(Exception, match="sample_scale"):
        replace(GeMSConfig(), sample_scale="var")


class _Stop(Exception):
    """Raised by the captured fit: the test needs the batches, not a trained GeMS."""


@pytest.mark.parametrize("shuffle", [None, "--shuffle"])
def test_gems_pretraining_walks_the_slates_in_the_published_order_by_default(tmp_path, monkeypatch, shuffle) -> None:
    """The published DataLoader does not shuffle: every epoch the training sessions in turn, each session's
    slates in step order. ``gems.shuffle: true`` (``--shuffle``) draws a seeded order per epoch instead."""
    import numpy as np

    from slate_rl.cli import main
    from slate_rl.data.logs import LoggedSessions, save_logs
    from slate_rl.sim.policies import EpsilonGreedyOracle
    from slate_rl.sim.rollout import run_sessions
    from slate_rl.stages import pretrain_gems

    assert GeMSConfig().shuffle is False
    sim = make_simulator("focused_topdown")
    out = run_sessions(sim, EpsilonGreedyOracle(1000, 10, 0.5), 20, seed=3, batch_size=20, record=True)
    logs = LoggedSessions(out.slates, out.clicks, out.reset_slates, out.reset_clicks, out.returns.astype(np.float32),
                          {"env": "focused_topdown", "env_config": sim.config.__dict__})
    save_logs(tmp_path / "logs.npz", logs)
    seen = []

    def capture(system, train, val, **kwargs):
        seen.append([b["slates"] for b in train])
        seen.append([b["slates"] for b in train])  # the second epoch
        raise _Stop

    monkeypatch.setattr(pretrain_gems, "fit", capture)
    with pytest.raises(_Stop):
        main(["pretrain-gems", "--logs", str(tmp_path / "logs.npz"), "--latent-dim", "4", "--epochs", "2",
              "--batch-size", "64", "--device", "cpu", "--no-progress", "--logger-mode", "disabled",
              "--output", str(tmp_path / "g.ckpt"), "--metrics", str(tmp_path / "g.json"),
              *([shuffle] if shuffle else [])])
    in_order = pretrain_gems.examples(logs, slice(2, None))["slates"]  # val_fraction 0.1: sessions 0-1
    for epoch in seen:
        walked = torch.cat(epoch)
        assert sorted(map(tuple, walked.tolist())) == sorted(map(tuple, in_order.tolist()))  # every slate once
        assert torch.equal(walked, in_order) == (shuffle is None)
    assert torch.equal(torch.cat(seen[0]), torch.cat(seen[1])) == (shuffle is None)
