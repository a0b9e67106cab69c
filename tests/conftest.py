"""Shared fixtures: paths of the repository and of the shared reference data, a stage killed at a call, a small
logs file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]

# Fixtures of the simulator tests (item tables, a default simulator): tests/sim_helpers.py.
pytest_plugins = ["sim_helpers"]

# SwanLab must never try to log in from the test run.
os.environ.setdefault("SWANLAB_MODE", "disabled")


def _paper_dir() -> Path | None:
    for base in (REPO.parent / "shared", REPO.parent.parent / "shared"):
        d = base / "data" / "gems_paper"
        if (d / "item_embeddings_focused.npy").is_file():
            return d
    return None


@pytest.fixture()
def kill_at_call(monkeypatch):
    """``kill_at_call(module, name, call)``: ``module.name`` raises KeyboardInterrupt (a stage run killed there;
    ``slate-rl`` exits with 130) at its ``call``-th call from now and passes every other call through, so the
    rerun of the killed stage runs unchanged. Arming it again counts afresh, as a new process would."""
    originals: dict[tuple[int, str], Any] = {}

    def arm(module: Any, name: str, call: int) -> None:
        real = originals.setdefault((id(module), name), getattr(module, name))
        calls = 0

        def killed_at_the_call(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == call:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, killed_at_the_call)

    return arm


@pytest.fixture(scope="module")
def logs_file(tmp_path_factory) -> Path:
    """60 logged sessions of focused_topdown (a few seconds to train on)."""
    import numpy as np

    from slate_rl.data.logs import LoggedSessions, save_logs
    from slate_rl.sim.policies import EpsilonGreedyOracle
    from slate_rl.sim.protocol import make_simulator
    from slate_rl.sim.rollout import run_sessions

    sim = make_simulator("focused_topdown")
    out = run_sessions(sim, EpsilonGreedyOracle(1000, 10, 0.5), 60, seed=3, batch_size=60, record=True)
    logs = LoggedSessions(out.slates, out.clicks, out.reset_slates, out.reset_clicks, out.returns.astype(np.float32),
                          {"env": "focused_topdown", "env_config": sim.config.__dict__})
    path = tmp_path_factory.mktemp("logs") / "focused_topdown.npz"
    save_logs(path, logs)
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def paper_embeddings_dir() -> Path:
    d = _paper_dir()
    if d is None:
        pytest.skip("the paper's item tables (../shared/data/gems_paper) are not beside this checkout")
    return d


@pytest.fixture()
def plugin():
    """``plugin("module")`` loads a plugin module as config.yaml's ``plugins`` does; the registries of offline methods
    and online agents are restored afterwards."""
    from slate_rl.offline.config import ALGO_CONFIGS
    from slate_rl.online.config import AGENT_KINDS
    from slate_rl.pipeline import load_plugins

    saved = [(registry, dict(registry)) for registry in (ALGO_CONFIGS, AGENT_KINDS)]
    yield lambda module: load_plugins([module])
    for registry, before in saved:
        registry.clear()
        registry.update(before)
