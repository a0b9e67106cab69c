"""Reliability: what a careful user runs into (issue 14): unsafe or stale work files, resumes
that outlive a config change, non-reproducible bytes, a full disk, orphan temp files and
validation gaps. Each test is the regression test of one defect."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from slate_rl.cli import main
from slate_rl.data.logs import LoggedSessions, save_logs
from slate_rl.sim.gym_env import build_simulator
from slate_rl.sim.policies import EpsilonGreedyOracle
from slate_rl.sim.rollout import run_sessions

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def logs_file(tmp_path_factory) -> Path:
    """60 logged sessions of focused_topdown (a few seconds to train on)."""
    sim = build_simulator("focused_topdown")
    out = run_sessions(sim, EpsilonGreedyOracle(1000, 10, 0.5), 60, seed=3, batch_size=60, record=True)
    logs = LoggedSessions(out.slates, out.clicks, out.reset_slates, out.reset_clicks, out.returns.astype(np.float32),
                          {"env": "focused_topdown", "env_config": sim.config.__dict__})
    path = tmp_path_factory.mktemp("logs") / "focused_topdown.npz"
    save_logs(path, logs)
    return path


def _train_mf(logs: Path, out: Path, *extra: str) -> int:
    return main(["train-mf", "--logs", str(logs), "--max-epochs", "2", "--batch-size", "512", "--lr", "0.01",
                 "--device", "cpu", "--no-progress", "--logger-mode", "disabled", "--output", str(out / "mf.npy"),
                 "--metrics", str(out / "mf.json"), *extra])


def _pretrain_gems(logs: Path, out: Path, *extra: str) -> int:
    return main(["pretrain-gems", "--logs", str(logs), "--latent-dim", "4", "--epochs", "2", "--batch-size", "512",
                 "--bounds-sessions", "10", "--device", "cpu", "--no-progress", "--logger-mode", "disabled",
                 "--output", str(out / "gems.ckpt"), "--metrics", str(out / "gems.json"), *extra])


# --------------------------------------------------------------------------- 4. same seed, same bytes


def test_same_seed_gives_the_same_bytes_for_mf_and_gems(logs_file, tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        assert _train_mf(logs_file, out) == 0
        assert _pretrain_gems(logs_file, out) == 0
    for name in ("mf.npy", "mf.json", "gems.ckpt", "gems.json"):
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name
    # timings live apart, so that the results can be compared byte for byte
    timings = json.loads((runs[0] / "mf.timings.json").read_text())
    assert timings["train_seconds"] > 0 and "train_seconds" not in json.loads((runs[0] / "mf.json").read_text())
    assert "examples_per_second" in json.loads((runs[0] / "gems.timings.json").read_text())
    assert not any(p.name.startswith(".") for out in runs for p in out.iterdir())  # no temp files left
