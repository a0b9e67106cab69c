"""The online training loop: collect sessions, update the agent, validate, checkpoint.

One training *step* collects ``sessions_per_step`` sessions (users simulated in parallel) and
then makes ``updates_per_step`` gradient steps on batches of ``batch_size`` episodes. The
paper's schedule is ``sessions_per_step = updates_per_step = 1`` for 100,000 steps, of which
the first 2,000 (``warmup_sessions``) collect sessions of uniformly random actions and make no
gradient step, as the published loop does (its "random steps" are counted in sessions: 2,000
warm-up sessions, then 98,000 learning steps); it is reproduced exactly by the defaults. A step
is a warm-up step when fewer than ``warmup_sessions`` sessions were collected before it. Every
``val_interval`` steps the deterministic policy is evaluated on
``val_sessions`` fixed users; the best-validation agent is kept.

``last`` checkpoints (agent with optimisers, replay buffer, counters, RNG state, learning
curve) are written every ``checkpoint_interval`` steps; a rerun resumes from there.

**Medium checkpoint** (for "medium" offline datasets, D4RL-style): at every validation the loop
may keep a snapshot of the agent's networks (:class:`MediumTracker`). At the end, the kept
snapshot whose validation return is closest to ``medium_fraction`` x the best validation
return is the medium agent (ties: the earlier one). Because the final best is unknown while
training, the tracker keeps the closest snapshot below the current target and the snapshots
above it, at most one per band of 2% of the current best, so memory stays bounded (about 50
snapshots of the networks without the frozen ranker).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from slate_rl.core.io import curve_from_tensor, curve_tensor, load_resume, save_resume
from slate_rl.core.logger import RunLogger
from slate_rl.core.rng import cuda_devices
from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.online.base import Agent
from slate_rl.online.config import OnlineConfig
from slate_rl.online.rollouts import Mode, policy_returns, run_agent_sessions, user_keys
from slate_rl.sim.core import TopicRec


@dataclass
class LoopState:
    """Counters of a run (saved in last.ckpt)."""

    step: int = 0
    sessions: int = 0
    env_steps: int = 0
    best_val: float = -math.inf
    best_step: int = 0
    curve: list[list[float]] | None = None
    medium: MediumTracker | None = None


class MediumTracker:
    """Validation snapshots from which the medium checkpoint is chosen (see the module doc)."""

    BAND = 0.02

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self.snapshots: list[tuple[int, float, dict[str, torch.Tensor]]] = []

    @staticmethod
    def snapshot(agent: Agent) -> dict[str, torch.Tensor]:
        """The agent's networks (CPU copies), without the frozen ranker."""
        return {k: v.detach().cpu().clone() for k, v in nn.Module.state_dict(agent).items()
                if not k.startswith("ranker.")}

    def observe(self, step: int, val: float, best: float, agent: Agent) -> None:
        self.snapshots.append((step, val, self.snapshot(agent)))
        target = self.fraction * best
        below = [s for s in self.snapshots if s[1] <= target]
        keep = [max(below, key=lambda s: (s[1], -s[0]))] if below else []
        band = max(abs(best) * self.BAND, 1e-9)
        seen: set[int] = set()
        for s in sorted((s for s in self.snapshots if s[1] > target), key=lambda s: s[0]):
            b = math.floor(s[1] / band)
            if b not in seen:
                seen.add(b)
                keep.append(s)
        self.snapshots = sorted(keep, key=lambda s: s[0])

    def choose(self, best: float) -> tuple[int, float, dict[str, torch.Tensor]] | None:
        if not self.snapshots:
            return None
        target = self.fraction * best
        return min(self.snapshots, key=lambda s: (abs(s[1] - target), s[0]))

    def state_dict(self) -> list[dict[str, Any]]:
        return [{"step": torch.tensor(st), "val": torch.tensor(v, dtype=torch.float64), "modules": m}
                for st, v, m in self.snapshots]

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        self.snapshots = [(int(s["step"]), float(s["val"]), s["modules"]) for s in state]


def evaluate(sim: TopicRec, agent: Agent, seed: int, sessions: int, batch: int = 4096) -> torch.Tensor:
    """Returns of the deterministic policy on users ``0 .. sessions-1`` of ``seed``; torch's RNG
    (that of training) is left as it was."""
    with torch.random.fork_rng(devices=cuda_devices()):
        return policy_returns(sim, agent, seed, sessions, "eval", batch)


def train_online(
    sim: TopicRec,
    agent: Agent,
    cfg: OnlineConfig,
    seed: int,
    save_best: Callable[[Agent, LoopState], None],
    last_path: str | os.PathLike[str],
    logger: RunLogger | None = None,
    progress: bool = True,
    fingerprint: str = "",
) -> LoopState:
    """Train ``agent`` online; ``save_best`` is called whenever validation improves.

    ``fingerprint`` identifies the run's inputs and settings (all but ``total_steps``, so that a
    finished run can be extended): a ``last`` checkpoint written under another fingerprint, or
    one already past ``total_steps`` (its curve is longer than this run's), is ignored and the
    run starts over.
    """
    c = sim.config
    buffer = EpisodeBuffer(cfg.buffer_capacity, c.episode_length, c.slate_size, agent.action_dim, sim.device,
                           extras=agent.buffer_extras())
    state = LoopState(curve=[], medium=MediumTracker(cfg.medium_fraction))
    torch.manual_seed(seed)
    last = Path(last_path)
    if last.is_file():
        refused = _load_last(last, agent, buffer, state, fingerprint, cfg.total_steps)
        if refused:
            print(f"{last}: {refused}; starting over")
    bar = tqdm(total=cfg.total_steps, initial=state.step, desc="online", unit="step", disable=not progress,
               dynamic_ncols=True)
    metrics: dict[str, float] = {}
    run_start, first_step = time.perf_counter(), state.step
    while state.step < cfg.total_steps:
        keys = user_keys(seed, state.sessions, cfg.sessions_per_step, sim.device)
        warming_up = state.sessions < cfg.warmup_sessions and (not agent.on_policy or agent.on_policy_warmup)
        mode: Mode = "random" if warming_up else "train"
        returns, episodes = run_agent_sessions(sim, agent, keys, mode, random_width=cfg.warmup_action_width)
        assert episodes is not None
        buffer.add(episodes)
        state.sessions += cfg.sessions_per_step
        state.env_steps += cfg.sessions_per_step * c.episode_length
        if agent.on_policy:  # learns from what it just collected, warm-up included (no replay)
            metrics = agent.update(episodes)
        elif not warming_up:
            for _ in range(cfg.updates_per_step):
                metrics = agent.update(buffer.sample_episodes(cfg.batch_size))
        state.step += 1
        bar.update(1)
        if state.step % cfg.val_interval == 0 or state.step == cfg.total_steps:
            val = float(evaluate(sim, agent, cfg.val_seed, cfg.val_sessions).mean())
            assert state.curve is not None
            state.curve.append([state.step, val])
            if val > state.best_val:
                state.best_val, state.best_step = val, state.step
                save_best(agent, state)
            assert state.medium is not None
            state.medium.observe(state.step, val, state.best_val, agent)
            bar.set_postfix(val=f"{val:.1f}", best=f"{state.best_val:.1f}")
            if not progress:  # a plain line for log files
                rate = (state.step - first_step) / max(time.perf_counter() - run_start, 1e-9)
                print(f"online: step {state.step}/{cfg.total_steps}, validation {val:.1f} (best {state.best_val:.1f}), "
                      f"{rate:.2f} steps/s", flush=True)
            if logger is not None:
                logger.log({"val_return": val, "train_return": float(returns.mean()), **metrics}, step=state.step)
        if state.step % cfg.checkpoint_interval == 0 or state.step == cfg.total_steps:
            _save_last(last, agent, buffer, state, fingerprint)
    bar.close()
    return state


def _save_last(path: Path, agent: Agent, buffer: EpisodeBuffer, state: LoopState, fingerprint: str,
               generator: torch.Generator | None = None) -> None:
    """Write the resume checkpoint (``generator``: the run's own sampling generator, if it has one)."""
    save_resume(path, {
        "agent": agent.state_dict(),
        "buffer": buffer.state_dict(),
        "counters": torch.tensor([state.step, state.sessions, state.env_steps, state.best_step]),
        "best_val": torch.tensor(state.best_val, dtype=torch.float64),
        "curve": curve_tensor(state.curve),
        "medium": state.medium.state_dict() if state.medium is not None else [],
    }, fingerprint, generator)


def _load_last(path: Path, agent: Agent, buffer: EpisodeBuffer, state: LoopState, fingerprint: str,
               total_steps: int, generator: torch.Generator | None = None) -> str | None:
    """Resume from ``path``; the reason why not, or None when resumed."""

    def restore(payload: dict[str, Any]) -> str | None:
        if "counters" in payload and int(payload["counters"][0]) > total_steps:
            return f"written at step {int(payload['counters'][0])}, past total_steps={total_steps}"
        agent.load_state_dict(payload["agent"])
        buffer.load_state_dict(payload["buffer"])
        state.step, state.sessions, state.env_steps, state.best_step = (int(x) for x in payload["counters"])
        state.best_val = float(payload["best_val"])
        state.curve = curve_from_tensor(payload["curve"])
        if state.medium is not None:
            state.medium.load_state_dict(payload.get("medium", []))
        return None

    return load_resume(path, fingerprint, restore, generator)
