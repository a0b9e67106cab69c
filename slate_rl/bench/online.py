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

from slate_rl.models.gems import GeMS
from slate_rl.models.rankers import GeMSRanker
from slate_rl.online.loop import OnlineConfig, train_online
from slate_rl.online.registry import make_agent
from slate_rl.sim.core import TopicRec

PAPER_STEPS = 100_000


def measure(sim: TopicRec, sessions_per_step: int, steps: int) -> dict[str, Any]:
    torch.manual_seed(0)
    gems = GeMSRanker(GeMS(latent_dim=32), torch.zeros(32), torch.ones(32)).to(sim.device)
    agent = make_agent("sac_gems_d32_beta1_lc0.5_scratch_s0", gems, gems.gems.items.weight.detach().clone(),
                       sim.config.num_items, sim.config.slate_size).to(sim.device)
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


def run_benchmark(sim: TopicRec, parallel: int, steps: int) -> list[dict[str, Any]]:
    rows = [measure(sim, 1, steps), measure(sim, parallel, max(1, steps // parallel))]
    for r in rows:
        r["speedup_vs_paper_schedule"] = r["sessions_per_second"] / rows[0]["sessions_per_second"]
    return rows
