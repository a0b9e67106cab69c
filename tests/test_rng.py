"""Counter-based RNG (slate_rl.core.rng): exact int64 arithmetic and basic statistics; determinism end to end
(the same seed gives the same bytes of logs, MF and GeMS) and validation that leaves the training RNG alone."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_resume import _pretrain_gems, _train_mf

from slate_rl.cli import main
from slate_rl.core import rng

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EXTREMES = [0, 1, -1, 2, -2, INT64_MIN, INT64_MAX, INT64_MIN + 1, INT64_MAX - 1,
            2**31, -(2**31), 2**32 - 1, 2**62, -(2**62), 0x5555555555555555, -0x5555555555555555]


def test_mix64_matches_python_reference_on_extremes() -> None:
    x = torch.tensor(EXTREMES, dtype=torch.int64)
    assert rng.mix64(x).tolist() == [rng.mix64_int(v) for v in EXTREMES]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=INT64_MIN, max_value=INT64_MAX), min_size=1, max_size=64))
def test_mix64_tensor_equals_python_reference(values: list[int]) -> None:
    """The tensor hash wraps around exactly like 64-bit unsigned arithmetic."""
    out = rng.mix64(torch.tensor(values, dtype=torch.int64))
    assert out.dtype == torch.int64
    assert out.tolist() == [rng.mix64_int(v) for v in values]


def test_mix64_int_is_signed_int64_and_known_value() -> None:
    # SplitMix64's first output for state 0 (x = 0 -> hash of the golden ratio) is
    # 0xE220A8397B1DCDAF (the published reference sequence).
    expected = 0xE220A8397B1DCDAF - 2**64
    assert rng.mix64_int(0) == expected
    for v in EXTREMES:
        assert INT64_MIN <= rng.mix64_int(v) <= INT64_MAX


def test_mix64_is_injective_on_a_range() -> None:
    x = torch.arange(-50_000, 50_000, dtype=torch.int64)
    assert torch.unique(rng.mix64(x)).numel() == x.numel()


def test_uniform_range_and_mean() -> None:
    n = 200_000
    u = rng.uniform(rng.derive_key(123, torch.arange(1000)), stream=5, step=7, n=n // 1000)
    assert u.dtype == torch.float32 and u.shape == (1000, n // 1000)
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    se = math.sqrt(1 / 12 / n)  # SE of the mean of n U(0,1) draws
    assert abs(float(u.double().mean()) - 0.5) < 4 * se
    # Variance 1/12; SE of the sample variance of U(0,1) is sqrt((1/80 - 1/144) / n).
    se_var = math.sqrt((1 / 80 - 1 / 144) / n)
    assert abs(float(u.double().var()) - 1 / 12) < 4 * se_var
    # Each decile holds 10% of the draws (binomial SE).
    counts = torch.histc(u.double(), bins=10, min=0.0, max=1.0)
    se_bin = math.sqrt(0.1 * 0.9 * n)
    assert torch.all((counts - n / 10).abs() < 4.5 * se_bin)


def test_normal_mean_and_std() -> None:
    n_users, n = 2000, 51  # odd n exercises the Box-Muller half-pair
    z = rng.normal(rng.derive_key(9, torch.arange(n_users)), stream=1, step=0, n=n).double()
    assert z.shape == (n_users, n) and torch.isfinite(z).all()
    total = z.numel()
    assert abs(float(z.mean())) < 4 / math.sqrt(total)
    # SE of the sample std of normals is about 1 / sqrt(2 n).
    assert abs(float(z.std()) - 1.0) < 4 / math.sqrt(2 * total)
    # Tails: P(|Z| > 1.96) = 0.05.
    tail = float((z.abs() > 1.959964).double().mean())
    assert abs(tail - 0.05) < 4 * math.sqrt(0.05 * 0.95 / total)


def test_randint_bounds_and_coverage() -> None:
    key = rng.derive_key(4, torch.arange(500))
    r = rng.randint(key, stream=2, step=3, n=100, high=7)
    assert r.dtype == torch.int64
    assert int(r.min()) == 0 and int(r.max()) == 6
    counts = torch.bincount(r.flatten(), minlength=7).double()
    n = r.numel()
    assert torch.all((counts - n / 7).abs() < 4.5 * math.sqrt(n * (1 / 7) * (6 / 7)))
    # Per-column bounds (a (n,) tensor of highs broadcasts over the users).
    highs = torch.arange(1, 11)
    r2 = rng.randint(key, stream=2, step=4, n=10, high=highs)
    assert torch.all(r2 >= 0) and torch.all(r2 < highs)
    assert torch.all(r2[:, 0] == 0)


def test_streams_steps_and_keys_give_different_numbers() -> None:
    key = rng.derive_key(0, torch.arange(4))
    a = rng.random_bits(key, 1, 0, 8)
    assert not torch.equal(a, rng.random_bits(key, 2, 0, 8))
    assert not torch.equal(a, rng.random_bits(key, 1, 1, 8))
    assert not torch.equal(a, rng.random_bits(rng.derive_key(1, torch.arange(4)), 1, 0, 8))
    assert torch.equal(a, rng.random_bits(key.clone(), 1, 0, 8))
    # A per-user step tensor equals the scalar step for each user.
    steps = torch.tensor([0, 3, 5, 9])
    per_user = rng.random_bits(key, 1, steps, 8)
    for i, s in enumerate(steps.tolist()):
        assert torch.equal(per_user[i], rng.random_bits(key[i : i + 1], 1, s, 8)[0])


def test_keys_independent_of_batch_composition() -> None:
    seed = 2754851
    batch = rng.derive_key(seed, torch.arange(10))
    for i in range(10):
        assert batch[i] == rng.derive_key(seed, torch.tensor([i]))[0]
        assert batch[i] == rng.derive_key(seed, i)
    assert torch.equal(batch[[3, 7]], rng.derive_key(seed, torch.tensor([3, 7])))
    # An int seed and the same seed as a tensor give the same keys (single vs vector env).
    seeds = torch.full((10,), seed, dtype=torch.int64)
    assert torch.equal(batch, rng.derive_key(seeds, torch.arange(10)))
    # Random draws of a user do not depend on who else is in the batch.
    u_batch = rng.uniform(batch, 4, 17, 10)
    assert torch.equal(u_batch[3:4], rng.uniform(batch[3:4], 4, 17, 10))
    z_batch = rng.normal(batch, 1, 0, 20)
    assert torch.equal(z_batch[5:6], rng.normal(batch[5:6], 1, 0, 20))


def test_subkey_is_deterministic_and_distinct() -> None:
    key = rng.derive_key(1, torch.arange(100))
    s1, s2 = rng.subkey(key, 1), rng.subkey(key, 2)
    assert torch.equal(s1, rng.subkey(key, 1))
    assert not torch.any(s1 == s2)
    assert not torch.any(s1 == key)


# --------------------------------------------------------------------------- same seed, same bytes


@pytest.mark.usefixtures("single_thread")
def test_same_seed_gives_the_same_bytes_for_logs_mf_and_gems(tmp_path):
    from slate_rl.sim.embeddings import generate_item_embeddings

    table = tmp_path / "focused.npy"
    np.save(table, generate_item_embeddings("focused", 0, 1000, 10, 2))
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        assert main(["generate-logs", "--env", "focused_topdown", "--embeddings-file", str(table), "--sessions", "60",
                     "--batch-size", "60", "--device", "cpu", "--no-progress", "--output", str(out / "logs.npz")]) == 0
        assert _train_mf(out / "logs.npz", out) == 0
        assert _pretrain_gems(out / "logs.npz", out) == 0
    for name in ("logs.npz", "mf.npy", "mf.json", "gems.ckpt", "gems.json"):
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name
    # timings live apart, so that the results can be compared byte for byte
    timings = json.loads((runs[0] / "mf.timings.json").read_text())
    assert timings["train_seconds"] > 0 and "train_seconds" not in json.loads((runs[0] / "mf.json").read_text())
    assert "examples_per_second" in json.loads((runs[0] / "gems.timings.json").read_text())
    assert "steps_per_second" in json.loads((runs[0] / "logs.timings.json").read_text())
    assert not any(p.name.startswith(".") for out in runs for p in out.iterdir())  # no temp files left


@pytest.mark.usefixtures("single_thread")
def test_online_validation_leaves_the_training_rng_alone(monkeypatch):
    from slate_rl.online import loop

    monkeypatch.setattr(loop, "policy_returns", lambda *args: torch.rand(4))  # a validation that draws numbers
    torch.manual_seed(0)
    before = torch.get_rng_state()
    loop.evaluate(None, None, seed=1, sessions=4)  # type: ignore[arg-type]
    assert torch.equal(torch.get_rng_state(), before)
