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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from slate_rl.core.io import check_seed_group, curve_from_tensor, curve_tensor, load_resume, resume_group, save_resume
from slate_rl.core.logger import RunLogger
from slate_rl.core.rng import cuda_devices
from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.online.base import Agent
from slate_rl.online.config import OnlineConfig
from slate_rl.online.multiseed import RNG_SCHEME, StackedSAC, check_stackable, evaluate_seeds, seed_generator, stackable
from slate_rl.online.rollouts import Mode, policy_returns, run_agent_sessions, user_keys
from slate_rl.sim.protocol import Simulator


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


def evaluate(sim: Simulator, agent: Agent, seed: int, sessions: int, batch: int = 4096) -> torch.Tensor:
    """Returns of the deterministic policy on users ``0 .. sessions-1`` of ``seed``; torch's RNG
    (that of training) is left as it was."""
    with torch.random.fork_rng(devices=cuda_devices()):
        return policy_returns(sim, agent, seed, sessions, "eval", batch)


def train_online(
    sim: Simulator,
    agent: Agent,
    cfg: OnlineConfig,
    seed: int,
    save_best: Callable[[Agent, LoopState], None],
    last_path: str | os.PathLike[str],
    logger: RunLogger | None = None,
    progress: bool = True,
    fingerprint: str = "",
) -> LoopState:
    """Train one ``agent`` with seed ``seed``: :func:`train_seeds` with one seed (``save_best(agent, state)``)."""
    return train_seeds(sim, [agent], cfg, [seed], lambda i, a, state: save_best(a, state), [last_path], logger,
                       progress, [fingerprint])[0]


def train_seeds(
    sim: Simulator,
    agents: Sequence[Agent],
    cfg: OnlineConfig,
    seeds: Sequence[int],
    save_best: Callable[[int, Agent, LoopState], None],
    last_paths: Sequence[str | os.PathLike[str]],
    logger: RunLogger | None = None,
    progress: bool = True,
    fingerprints: Sequence[str] | None = None,
) -> list[LoopState]:
    """Train ``agents[i]`` on seed ``seeds[i]``'s users (the module doc's schedule, validation, medium tracking and
    resume); one seed is the case S = 1.

    Several seeds train together (:class:`~slate_rl.online.multiseed.StackedSAC`: plain SAC agents with a
    ranker, :func:`~slate_rl.online.multiseed.stackable`); a plain SAC agent trains stacked alone too, so its run
    is the same whatever the seeds beside it. Any other agent trains alone. ``save_best(i, agent, state)`` is
    called with seed ``i``'s agent whenever its validation improves; ``last_paths[i]`` is seed ``i``'s resume
    checkpoint, written under ``fingerprints[i]``; ``logger`` gets every seed's metrics, under ``seed<s>/`` in a
    group of several (one run for the group). Returns each seed's final :class:`LoopState` (``agents[i]`` then
    holds its final state).

    **Randomness.** Seed ``s`` trains on users ``user_keys(s, ...)`` and draws its replay indices from its own
    generator (:func:`~slate_rl.online.multiseed.seed_generator`); a stacked SAC draws its exploration noise and
    warm-up actions from that generator too, another agent from torch's global generator, seeded with ``s``.
    So a seed's streams depend neither on how many seeds train beside it nor on which.
    """
    n = len(agents)
    check_seed_group(n, seeds, last_paths, fingerprints, "agent")
    stacks = stackable(agents[0])
    if n > 1 and not stacks:
        check_stackable(agents[0])  # one ConfigError: this agent trains its seeds one by one
    c = sim.config
    prints = [f"{fp}:{RNG_SCHEME}" for fp in (fingerprints or [""] * n)]
    lasts = [Path(p) for p in last_paths]
    first = agents[0]
    on_policy = first.on_policy

    def fresh() -> tuple[list[EpisodeBuffer], list[LoopState], list[torch.Generator]]:
        return ([EpisodeBuffer(cfg.buffer_capacity, c.episode_length, c.slate_size, first.action_dim, sim.device,
                               extras=first.buffer_extras()) for _ in range(n)],
                [LoopState(curve=[], medium=MediumTracker(cfg.medium_fraction)) for _ in range(n)],
                [seed_generator(s) for s in seeds])

    torch.manual_seed(seeds[0])  # an unstacked agent's noise; stacked agents draw from their own generators
    buffers, states, gens = fresh()
    if not resume_group(seeds, lasts, agents, lambda i: _load_last(lasts[i], agents[i], buffers[i], states[i],
                                                                   prints[i], cfg.total_steps, gens[i]),
                        lambda: [s.step for s in states]):
        buffers, states, gens = fresh()
    stacked = StackedSAC([check_stackable(a) for a in agents], gens) if stacks else None
    actor: Agent = stacked if stacked is not None else first

    def sync(i: int) -> None:
        """Seed ``i``'s current state into ``agents[i]``."""
        if stacked is not None:
            agents[i].load_state_dict(stacked.seed_state_dict(i))

    step, sessions = states[0].step, states[0].sessions
    e = cfg.sessions_per_step
    bar = tqdm(total=cfg.total_steps, initial=step, desc=f"online x{n}" if n > 1 else "online", unit="step",
               disable=not progress, dynamic_ncols=True)
    metrics: list[dict[str, float]] = [{} for _ in range(n)]
    run_start, first_step = time.perf_counter(), step

    def prefix(i: int) -> str:
        return f"seed{seeds[i]}/" if n > 1 else ""

    while step < cfg.total_steps:
        keys = torch.cat([user_keys(s, sessions, e, sim.device) for s in seeds])
        warming_up = sessions < cfg.warmup_sessions and (not on_policy or first.on_policy_warmup)
        mode: Mode = "random" if warming_up else "train"
        returns, episodes = run_agent_sessions(sim, actor, keys, mode, random_width=cfg.warmup_action_width)
        assert episodes is not None
        for i, buffer in enumerate(buffers):
            buffer.add({k: v[i * e:(i + 1) * e] for k, v in episodes.items()})
        sessions += e
        step += 1
        for st in states:
            st.sessions, st.step = sessions, step
            st.env_steps += e * c.episode_length
        if on_policy:  # learns from what it just collected, warm-up included (no replay)
            metrics = [first.update(episodes)]
        elif not warming_up:
            for _ in range(cfg.updates_per_step):
                batches = [b.sample_episodes(cfg.batch_size, generator=g) for b, g in zip(buffers, gens, strict=True)]
                if stacked is not None:
                    metrics = stacked.update_seeds({k: torch.stack([b[k] for b in batches]) for k in batches[0]})
                else:
                    metrics = [first.update(batches[0])]
        bar.update(1)
        if step % cfg.val_interval == 0 or step == cfg.total_steps:
            if stacked is not None:
                vals = evaluate_seeds(sim, stacked, cfg.val_seed, cfg.val_sessions).mean(dim=1).tolist()
            else:
                vals = [float(evaluate(sim, first, cfg.val_seed, cfg.val_sessions).mean())]
            train_returns = returns.view(n, e).mean(dim=1).tolist()
            for i, (st, val) in enumerate(zip(states, vals, strict=True)):
                sync(i)
                assert st.curve is not None and st.medium is not None
                st.curve.append([step, val])
                if val > st.best_val:
                    st.best_val, st.best_step = val, step
                    save_best(i, agents[i], st)
                st.medium.observe(step, val, st.best_val, agents[i])
                if logger is not None:
                    logger.log({f"{prefix(i)}{k}": v for k, v in
                                {"val_return": val, "train_return": train_returns[i], **metrics[i]}.items()}, step=step)
            bar.set_postfix(val=f"{sum(vals) / n:.1f}", best=f"{max(s.best_val for s in states):.1f}")
            if not progress:  # a plain line for log files
                rate = (step - first_step) / max(time.perf_counter() - run_start, 1e-9)
                print(f"online: step {step}/{cfg.total_steps}, validation {', '.join(f'{v:.1f}' for v in vals)} "
                      f"(best {', '.join(f'{s.best_val:.1f}' for s in states)}), {rate:.2f} steps/s", flush=True)
        if step % cfg.checkpoint_interval == 0 or step == cfg.total_steps:
            for i in range(n):
                sync(i)
                _save_last(lasts[i], agents[i], buffers[i], states[i], prints[i], gens[i])
    bar.close()
    for i in range(n):
        sync(i)
    return states


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
