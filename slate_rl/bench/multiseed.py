"""Multi-seed SAC+GeMS online training throughput (``slate-rl bench online --seeds 1,10``).

For each number of seeds S and each schedule, S seeds of SAC+GeMS (randomly initialised GeMS,
d = 32, batch 20 episodes) train together in one process (:func:`slate_rl.online.loop.train_seeds`),
simulation and gradient steps included; the rate counts *seed-sessions* (S sessions per step and
seed count as S). Schedules:

* ``paper``: one session, then one gradient step, per seed (the published schedule);
* ``quick``: ``E`` sessions simulated together, then ``E`` gradient steps, per seed.

Both make one gradient step per session, so the paper's 10-seed protocol for one agent (10 seeds x
100,000 sessions and 100,000 gradient steps) takes ``10 * 100,000 / rate`` seconds: with S = 1 the
seeds run one after another, with S = 10 together. The replay buffers hold 1,000 episodes here (the
paper's 10,000 only change the memory, not the cost of a step).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from slate_rl.bench.online import random_gems_ranker, sac_gems_agent
from slate_rl.online.config import OnlineConfig
from slate_rl.online.loop import train_seeds
from slate_rl.online.multiseed import projected_hours
from slate_rl.sim.protocol import Simulator

PROTOCOL_SEEDS = 10
PROTOCOL_SESSIONS = 100_000


def _agents(sim: Simulator, seeds: int) -> list[Any]:
    gems = random_gems_ranker(sim.device)
    agents = []
    for s in range(seeds):
        torch.manual_seed(s)
        agents.append(sac_gems_agent(gems, sim.config.num_items, sim.config.slate_size))
    return agents


def measure(sim: Simulator, seeds: int, sessions_per_step: int, steps: int) -> dict[str, Any]:
    """One row: ``seeds`` seeds for ``steps`` steps of ``sessions_per_step`` sessions and as many updates."""
    agents = _agents(sim, seeds)
    e = sessions_per_step
    base = dict(sessions_per_step=e, updates_per_step=e, warmup_sessions=0, buffer_capacity=1000, val_sessions=1,
                val_interval=10**9, checkpoint_interval=10**9)
    ids = list(range(seeds))
    with tempfile.TemporaryDirectory() as tmp:
        # one untimed step first (allocations, first calls), then the timed run from a fresh start
        train_seeds(sim, agents, OnlineConfig(total_steps=1, **base), ids, lambda i, a, s: None,
                    [Path(tmp) / f"warm{i}.ckpt" for i in ids], progress=False)
        if sim.device.type == "cuda":
            torch.cuda.synchronize(sim.device)
        start = time.perf_counter()
        train_seeds(sim, agents, OnlineConfig(total_steps=steps, **base), ids, lambda i, a, s: None,
                    [Path(tmp) / f"x{i}.ckpt" for i in ids], progress=False)
        if sim.device.type == "cuda":
            torch.cuda.synchronize(sim.device)
        elapsed = time.perf_counter() - start
    rate = seeds * steps * e / elapsed
    return {"seeds": seeds, "schedule": "paper" if e == 1 else f"quick (E={e})", "sessions_per_step": e,
            "updates_per_step": e, "steps": steps, "seconds": elapsed, "seed_sessions_per_second": rate,
            "projected_10_seed_hours": projected_hours(rate, PROTOCOL_SEEDS, PROTOCOL_SESSIONS)}


def run_benchmark(sim: Simulator, seeds: list[int], parallel: int, steps: int) -> list[dict[str, Any]]:
    """Rows for every number of seeds, on the paper schedule (``steps`` steps) and the quick one
    (``steps // parallel`` steps of ``parallel`` sessions); the ratio to the first number of seeds."""
    rows = []
    for e, n in ((1, steps), (parallel, max(1, steps // parallel))):
        first = None
        for s in seeds:
            row = measure(sim, s, e, n)
            first = first or row
            row["speedup_vs_first"] = row["seed_sessions_per_second"] / first["seed_sessions_per_second"]
            rows.append(row)
    return rows
