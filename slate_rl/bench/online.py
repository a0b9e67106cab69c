"""SAC+GeMS online training throughput: simulation + gradient steps, and the projected time of
the paper's budget (100,000 sessions and 100,000 gradient steps on batches of 20 episodes).

Schedules measured in the same run, on the same device, with a randomly initialised GeMS:

* ``paper``: one session, then one gradient step (the published schedule);
* ``parallel``: ``E`` sessions simulated together, then ``E`` gradient steps (same number of
  updates per session, fewer simulator calls).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from slate_rl.models.belief import BeliefEncoder
from slate_rl.models.gems import GeMS
from slate_rl.models.rankers import GeMSRanker
from slate_rl.online.base import Agent
from slate_rl.online.loop import OnlineConfig, train_online
from slate_rl.online.sac import SAC
from slate_rl.sim.protocol import Simulator

PAPER_STEPS = 100_000


def random_gems_ranker(device: torch.device) -> GeMSRanker:
    """The benchmarks' GeMS: randomly initialised (seed 0), d = 32, unit action box."""
    torch.manual_seed(0)
    return GeMSRanker(GeMS(latent_dim=32), torch.zeros(32), torch.ones(32)).to(device)


def sac_gems_agent(gems: GeMSRanker, num_items: int = 1000, slate_size: int = 10) -> Agent:
    """A SAC+GeMS agent on ``gems`` (its belief tables start from the GeMS item table), on its device."""
    table = gems.gems.items.weight.detach().clone()
    return SAC(gems, num_items, table.shape[1], slate_size, item_table=table).to(gems.action_center.device)


def measure(sim: Simulator, sessions_per_step: int, steps: int) -> dict[str, Any]:
    agent = sac_gems_agent(random_gems_ranker(sim.device), sim.config.num_items, sim.config.slate_size)
    e = sessions_per_step
    warm = OnlineConfig(total_steps=1, sessions_per_step=max(e, 20), updates_per_step=1, warmup_sessions=0,
                        val_interval=10**9, checkpoint_interval=10**9)
    cfg = OnlineConfig(total_steps=steps + 1, sessions_per_step=e, updates_per_step=e, warmup_sessions=0,
                       val_interval=10**9, checkpoint_interval=10**9)
    with tempfile.TemporaryDirectory() as tmp:
        train_online(sim, agent, warm, 0, lambda a, s: None, Path(tmp) / "warm.ckpt", progress=False)
        if sim.device.type == "cuda":
            torch.cuda.synchronize(sim.device)
        start = time.perf_counter()
        train_online(sim, agent, cfg, 1, lambda a, s: None, Path(tmp) / "x.ckpt", progress=False)
        if sim.device.type == "cuda":
            torch.cuda.synchronize(sim.device)
        elapsed = time.perf_counter() - start
    sessions = (steps + 1) * e
    per_session = elapsed / sessions  # one session + one gradient step
    return {"schedule": "paper" if e == 1 else f"parallel (E={e})", "sessions_per_step": e,
            "sessions_per_second": sessions / elapsed, "projected_paper_budget_hours": per_session * PAPER_STEPS / 3600}


def run_benchmark(sim: Simulator, parallel: int, steps: int) -> list[dict[str, Any]]:
    rows = [measure(sim, 1, steps), measure(sim, parallel, max(1, steps // parallel))]
    for r in rows:
        r["speedup_vs_paper_schedule"] = r["sessions_per_second"] / rows[0]["sessions_per_second"]
    return rows


def measure_update(device: torch.device, fused: bool, min_seconds: float) -> float:
    """Milliseconds per SAC+GeMS gradient step on a fixed batch of 20 episodes of 100 steps."""
    agent = sac_gems_agent(random_gems_ranker(device))
    for enc in agent.modules():
        if isinstance(enc, BeliefEncoder):
            enc.fused = fused
    gen = torch.Generator().manual_seed(1)
    ep = {"slates": torch.randint(0, 1000, (20, 101, 10), generator=gen),
          "clicks": (torch.rand(20, 101, 10, generator=gen) < 0.1).float(),
          "actions": torch.randn(20, 100, 32, generator=gen), "rewards": torch.rand(20, 100, generator=gen)}
    ep = {k: v.to(device) for k, v in ep.items()}
    for _ in range(3):
        agent.update(ep)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds or n < 5:
        agent.update(ep)  # returns floats: one host sync per update, as in training
        n += 1
    return (time.perf_counter() - start) / n * 1000


def run_update_benchmark(device: torch.device, min_seconds: float) -> list[dict[str, Any]]:
    """One SAC update with the belief GRUs unrolled by ``nn.GRU`` (baseline) and by the fused CPU unroll
    (models/belief.py; on CUDA both rows use cuDNN), best of 2 alternating rounds."""
    best = {False: float("inf"), True: float("inf")}
    for _ in range(2):
        for fused in (False, True):
            best[fused] = min(best[fused], measure_update(device, fused, min_seconds))
    return [{"gru": "nn.GRU" if not fused else "fused", "ms_per_update": best[fused],
             "updates_per_second": 1000 / best[fused], "speedup_vs_nn_gru": best[False] / best[fused]}
            for fused in (False, True)]
