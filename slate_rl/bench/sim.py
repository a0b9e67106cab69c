"""Simulator throughput: environment steps per second against the batch size.

Each case runs whole 100-step sessions of a reference policy (policy + simulator step,
including oracle top-k and the diversity penalty) for at least ``min_seconds``, after a
warm-up session. Ratios are against B = 1 measured in the same run on the same device.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from slate_rl.sim.policies import make_policy
from slate_rl.sim.protocol import Simulator
from slate_rl.sim.rollout import session_keys


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steps_per_second(sim: Simulator, policy_name: str, batch_size: int, min_seconds: float = 1.0) -> float:
    """Env steps per second of ``policy_name`` with ``batch_size`` users in parallel."""
    c = sim.config
    policy = make_policy(policy_name, c.num_items, c.slate_size, 0.5)
    steps = 0
    session = 0
    elapsed = 0.0
    with torch.inference_mode():
        while True:
            keys = session_keys(1234, session * batch_size, (session + 1) * batch_size, sim.device)
            state, obs = sim.reset(keys)
            _sync(sim.device)
            start = time.perf_counter()
            for _ in range(c.episode_length):
                state, obs = sim.step(state, policy(keys, state.t, obs.slate, obs.clicks), validate=False)
            _sync(sim.device)
            if session > 0:  # the first session is warm-up
                elapsed += time.perf_counter() - start
                steps += batch_size * c.episode_length
                if elapsed >= min_seconds:
                    break
            session += 1
    return steps / elapsed


def run_benchmark(
    sim: Simulator, policies: list[str], batch_sizes: list[int], min_seconds: float = 1.0
) -> list[dict[str, Any]]:
    """One row per (policy, B): steps/s and the ratio to the smallest B of the same policy."""
    rows = []
    for policy in policies:
        base = None
        for b in batch_sizes:
            sps = steps_per_second(sim, policy, b, min_seconds)
            base = base or sps
            rows.append({"policy": policy, "batch_size": b, "steps_per_second": sps, "ratio_to_first": sps / base})
    return rows
