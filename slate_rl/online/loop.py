"""The online training loop: collect sessions, update the agent, validate, checkpoint.

One training *step* collects ``sessions_per_step`` sessions (users simulated in parallel) and
then makes ``updates_per_step`` gradient steps on batches of ``batch_size`` episodes. The
paper's schedule is ``sessions_per_step = updates_per_step = 1`` for 100,000 steps, after
2,000 environment steps of uniformly random actions; it is reproduced exactly by the
defaults. Every ``val_interval`` steps the deterministic policy is evaluated on
``val_sessions`` fixed users; the best-validation agent is kept.

``last`` checkpoints (agent with optimisers, replay buffer, counters, RNG state, learning
curve) are written every ``checkpoint_interval`` steps; a rerun resumes from there.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from slate_rl.core.errors import ConfigError
from slate_rl.core.io import atomic_path
from slate_rl.core.logger import RunLogger
from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.online.agent import Agent
from slate_rl.online.collect import Mode, run_agent_sessions, user_keys
from slate_rl.sim.core import TopicRec


@dataclass(frozen=True)
class OnlineConfig:
    """Schedule of online training (config.yaml's ``online`` section); paper values by default."""

    total_steps: int = 100_000
    """Training steps."""
    sessions_per_step: int = 1
    """Sessions collected per step (users simulated in parallel)."""
    updates_per_step: int = 1
    """Gradient steps per training step."""
    batch_size: int = 20
    """Episodes per gradient step."""
    buffer_capacity: int = 10_000
    """Replay capacity in episodes."""
    warmup_env_steps: int = 2000
    """Environment steps (user-steps) of uniformly random actions before learning starts."""
    val_interval: int = 1000
    """Validate every this many training steps."""
    val_sessions: int = 200
    """Validation users (fixed)."""
    val_seed: int = 7_000_001
    """Seed of the validation users."""
    checkpoint_interval: int = 1000
    """Write last.ckpt every this many training steps."""

    def __post_init__(self) -> None:
        for name in ("total_steps", "sessions_per_step", "updates_per_step", "batch_size", "buffer_capacity",
                     "val_interval", "val_sessions", "checkpoint_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"online.{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_env_steps < 0:
            raise ConfigError(f"online.warmup_env_steps must be >= 0, got {self.warmup_env_steps}")


@dataclass
class LoopState:
    """Counters of a run (saved in last.ckpt)."""

    step: int = 0
    sessions: int = 0
    env_steps: int = 0
    best_val: float = -math.inf
    best_step: int = 0
    curve: list[list[float]] | None = None


def evaluate(sim: TopicRec, agent: Agent, seed: int, sessions: int, batch: int = 4096) -> torch.Tensor:
    """Returns of the deterministic policy on users ``0 .. sessions-1`` of ``seed``."""
    was_training = agent.training
    agent.eval()
    out = []
    for start in range(0, sessions, batch):
        keys = user_keys(seed, start, min(batch, sessions - start), sim.device)
        returns, _ = run_agent_sessions(sim, agent, keys, "eval", record=False)
        out.append(returns)
    agent.train(was_training)
    return torch.cat(out)


def train_online(
    sim: TopicRec,
    agent: Agent,
    cfg: OnlineConfig,
    seed: int,
    save_best: Callable[[Agent, LoopState], None],
    last_path: str | os.PathLike[str],
    logger: RunLogger | None = None,
    progress: bool = True,
) -> LoopState:
    """Train ``agent`` online; ``save_best`` is called whenever validation improves."""
    c = sim.config
    buffer = EpisodeBuffer(cfg.buffer_capacity, c.episode_length, c.slate_size, agent.action_dim, sim.device,
                           extras=agent.buffer_extras())
    state = LoopState(curve=[])
    torch.manual_seed(seed)
    last = Path(last_path)
    if last.is_file():
        _load_last(last, agent, buffer, state)
    bar = tqdm(total=cfg.total_steps, initial=state.step, desc="online", unit="step", disable=not progress,
               dynamic_ncols=True)
    metrics: dict[str, float] = {}
    while state.step < cfg.total_steps:
        keys = user_keys(seed, state.sessions, cfg.sessions_per_step, sim.device)
        warming_up = state.env_steps < cfg.warmup_env_steps and not agent.on_policy
        mode: Mode = "random" if warming_up else "train"
        returns, episodes = run_agent_sessions(sim, agent, keys, mode)
        assert episodes is not None
        buffer.add(episodes)
        state.sessions += cfg.sessions_per_step
        state.env_steps += cfg.sessions_per_step * c.episode_length
        if agent.on_policy:  # learns from what it just collected (no warm-up, no replay)
            metrics = agent.update(episodes)
        elif state.env_steps >= cfg.warmup_env_steps and len(buffer) > 0:
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
            bar.set_postfix(val=f"{val:.1f}", best=f"{state.best_val:.1f}")
            if logger is not None:
                logger.log({"val_return": val, "train_return": float(returns.mean()), **metrics}, step=state.step)
        if state.step % cfg.checkpoint_interval == 0 or state.step == cfg.total_steps:
            _save_last(last, agent, buffer, state)
    bar.close()
    return state


def _save_last(path: Path, agent: Agent, buffer: EpisodeBuffer, state: LoopState) -> None:
    payload: dict[str, Any] = {
        "agent": agent.state_dict(),
        "buffer": buffer.state_dict(),
        "counters": torch.tensor([state.step, state.sessions, state.env_steps, state.best_step]),
        "best_val": torch.tensor(state.best_val, dtype=torch.float64),
        "curve": torch.tensor(state.curve or [], dtype=torch.float64).reshape(-1, 2),
        "torch_rng": torch.get_rng_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _load_last(path: Path, agent: Agent, buffer: EpisodeBuffer, state: LoopState) -> None:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    agent.load_state_dict(payload["agent"])
    buffer.load_state_dict(payload["buffer"])
    step, sessions, env_steps, best_step = (int(x) for x in payload["counters"])
    state.step, state.sessions, state.env_steps, state.best_step = step, sessions, env_steps, best_step
    state.best_val = float(payload["best_val"])
    state.curve = payload["curve"].tolist()
    torch.set_rng_state(payload["torch_rng"])
