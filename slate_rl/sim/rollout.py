"""Run a batched policy for many sessions: evaluation returns and logged sessions.

Session ``n`` under ``seed`` is the user with key ``derive_key(seed, n)``; sessions are
simulated ``batch_size`` at a time, and because every random number is keyed per user the
result does not depend on ``batch_size``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from slate_rl.core import rng
from slate_rl.core.errors import ConfigError
from slate_rl.sim.policies import SlatePolicy
from slate_rl.sim.protocol import Simulator


@dataclass
class Rollout:
    """Sessions of one policy (history arrays only when recorded)."""

    returns: np.ndarray
    """(n,) float64 return of each session."""
    steps_per_second: float
    """Environment steps per second of wall time (simulation and policy)."""
    slates: np.ndarray | None = None
    """(n, H, k) int16 slates shown at steps 1..H (oracle slots filled)."""
    clicks: np.ndarray | None = None
    """(n, H, k) bool clicks at steps 1..H."""
    reset_slates: np.ndarray | None = None
    """(n, k) int16 initial slates."""
    reset_clicks: np.ndarray | None = None
    """(n, k) bool clicks on the initial slates."""


def session_keys(seed: int, start: int, stop: int, device: torch.device) -> torch.Tensor:
    """User keys of sessions ``start .. stop-1`` under ``seed``."""
    return rng.derive_key(seed, torch.arange(start, stop, dtype=torch.int64, device=device), device=device)


def run_sessions(
    sim: Simulator,
    policy: SlatePolicy,
    n_sessions: int,
    seed: int,
    policy_seed: int | None = None,
    batch_size: int = 8192,
    record: bool = False,
    progress: bool = False,
    desc: str = "sessions",
) -> Rollout:
    """Simulate ``n_sessions`` full sessions of ``policy`` and return their returns (and history)."""
    if n_sessions < 1:
        raise ConfigError(f"number of sessions must be >= 1, got {n_sessions}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    c = sim.config
    h, k = c.episode_length, c.slate_size
    policy_seed = seed if policy_seed is None else policy_seed
    returns = np.zeros(n_sessions, dtype=np.float64)
    if record:
        slates = np.zeros((n_sessions, h, k), dtype=np.int16)
        clicks = np.zeros((n_sessions, h, k), dtype=bool)
        reset_slates = np.zeros((n_sessions, k), dtype=np.int16)
        reset_clicks = np.zeros((n_sessions, k), dtype=bool)
    bar = tqdm(total=n_sessions, desc=desc, unit="session", disable=not progress, dynamic_ncols=True)
    start_time = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, n_sessions, batch_size):
            stop = min(start + batch_size, n_sessions)
            keys = session_keys(seed, start, stop, sim.device)
            pkeys = rng.subkey(keys, policy_seed)
            state, obs = sim.reset(keys)
            total = torch.zeros(stop - start, dtype=torch.float32, device=sim.device)
            if record:
                reset_slates[start:stop] = obs.slate.cpu().numpy()
                reset_clicks[start:stop] = obs.clicks.cpu().numpy()
                hist_s = torch.empty((stop - start, h, k), dtype=torch.int16, device=sim.device)
                hist_c = torch.empty((stop - start, h, k), dtype=torch.bool, device=sim.device)
            for step in range(h):
                action = policy(pkeys, state.t, obs.slate, obs.clicks)
                state, obs = sim.step(state, action, validate=False)
                total += obs.reward
                if record:
                    hist_s[:, step] = obs.slate
                    hist_c[:, step] = obs.clicks
            returns[start:stop] = total.cpu().numpy()
            if record:
                slates[start:stop] = hist_s.cpu().numpy()
                clicks[start:stop] = hist_c.cpu().numpy()
            bar.update(stop - start)
    elapsed = time.perf_counter() - start_time
    bar.close()
    out = Rollout(returns=returns, steps_per_second=n_sessions * h / max(elapsed, 1e-9))
    if record:
        out.slates, out.clicks, out.reset_slates, out.reset_clicks = slates, clicks, reset_slates, reset_clicks
    return out
