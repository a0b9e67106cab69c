"""Many seeds of one SAC configuration trained together in one process.

S seeds of the same agent and schedule cost little more than one on a CPU: a SAC update on 20
episodes, or a simulator step of a few users, is mostly the fixed cost of many tiny tensor ops,
so stacking the seeds along a leading dimension makes every op S times larger at about the same
cost (``slate-rl bench online --seeds 1,10``).

**Networks.** :class:`StackedSAC` is a :class:`~slate_rl.online.sac.SAC` whose networks hold the
parameters of S ordinary agents stacked along a leading seed dimension
(:mod:`slate_rl.models.stacked`, same parameter names). It runs SAC's own loss code
(``critic_loss``, ``actor_losses``, ``update_step``) unchanged: only the three hooks that reduce a
batch and draw noise keep the seed dimension, so each seed's loss is exactly SAC's and the losses
are summed over seeds before ``backward``; a seed's gradient is therefore its own loss's gradient.
The optimisers are the agents' own Adam (same hyperparameters) over the stacked tensors: Adam is
element-wise, so one Adam over S stacked parameters is S independent Adams (their step counters
coincide, as every seed steps together). The frozen ranker (GeMS decoder) is shared.

**Users.** Seed ``s`` trains on users ``user_keys(s, ...)``, the users :func:`~slate_rl.online.loop.train_online`
gives seed ``s``, and validates on the same validation users; the simulator steps every seed's users in one
call (seed-major: rows ``i*E .. (i+1)*E-1`` are seed ``seeds[i]``'s).

**Randomness.** Each seed draws its exploration noise, its warm-up actions and its replay indices
from its own ``torch.Generator`` (:func:`seed_generator`), in an order fixed by its own schedule:
a seed's stream does not depend on S or on its neighbours, so a seed trained alone (S = 1) and
among ten follows the same trajectory up to float rounding (the batched matmuls may round
differently), and the per-seed statistics cannot depend on the group. ``train-agent`` trains every
plain SAC agent here, one seed included. The loop of the other agents
(:func:`~slate_rl.online.loop.train_online`) draws from torch's global generator, seeded per seed;
a SAC agent trained there equals one trained here in distribution, not draw for draw. Initial
networks: the caller builds agent ``i`` after ``torch.manual_seed(seeds[i])``.

**Outputs.** Every validation loads seed ``i``'s slice into ``agents[i]`` (an ordinary SAC), which
the callbacks (best checkpoint, medium snapshots) receive, so they write the files of one
agent's run (:func:`~slate_rl.online.registry.save_agent` format). At the end ``agents[i]``
holds seed ``i``'s final state.

**Resume.** One resume checkpoint per seed, in ``train_online``'s format plus the seed's generator
state (``sample_rng``), all written at the same step. The group resumes only when every seed's
checkpoint fits (same fingerprint, same step); otherwise every seed starts over (a kill between
two seeds' renames leaves them one interval apart). A checkpoint of ``train_online`` is never resumed
here nor the other way round: the fingerprint carries the RNG scheme.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from slate_rl.core import rng
from slate_rl.core.errors import ConfigError
from slate_rl.core.io import check_seed_group, resume_group
from slate_rl.core.logger import RunLogger
from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.models.stacked import SeedStates, StackedBeliefEncoder, stack_mlp, stack_optimizer
from slate_rl.online.base import Agent
from slate_rl.online.config import OnlineConfig
from slate_rl.online.loop import LoopState, MediumTracker, _load_last, _save_last
from slate_rl.online.rollouts import Mode, run_agent_sessions, user_keys
from slate_rl.online.sac import SAC, Critic
from slate_rl.sim.core import TopicRec

RNG_SCHEME = "multiseed-v1"
"""Appended to every resume fingerprint: a checkpoint of ``train_online`` (global generator) is not
resumed here, nor one of this loop there."""
_GENERATOR_TAG = 0x5EED5


def seed_generator(seed: int) -> torch.Generator:
    """Seed ``seed``'s own CPU generator (noise, warm-up actions, replay indices): a hash of the seed, so it is
    not the stream ``torch.manual_seed(seed)`` gives the network initialisation."""
    return torch.Generator().manual_seed(rng.mix64_int(rng._signed(seed) ^ _GENERATOR_TAG) & ((1 << 63) - 1))


def stackable(agent: Agent) -> bool:
    """Whether ``agent``'s seeds can train together (plain SAC with a ranker: SAC+GeMS, TopK, kargmax)."""
    return type(agent) is SAC


def check_stackable(agent: Agent) -> SAC:
    """``agent`` if it can be trained multi-seed (:func:`stackable`); ConfigError otherwise."""
    if not isinstance(agent, SAC) or not stackable(agent):
        raise ConfigError(f"multi-seed training supports SAC agents with a ranker (sac_gems_*, sac_topk_*, "
                          f"sac_kargmax), not {type(agent).__name__} ({agent.build.get('agent', agent.name)}) yet; "
                          "train its seeds one by one")
    return agent


class StackedCritic(Critic):
    """S critics (belief encoder and twin Q networks) stacked; ``q`` is :meth:`Critic.q`."""

    def __init__(self, critics: Sequence[Critic]) -> None:
        nn.Module.__init__(self)
        self.belief = StackedBeliefEncoder([c.belief for c in critics])  # type: ignore[assignment]
        self.q1 = stack_mlp([c.q1 for c in critics])
        self.q2 = stack_mlp([c.q2 for c in critics])


class StackedSAC(SAC, SeedStates):
    """S SAC agents of one configuration as one agent over S x E users (seed-major rows).

    Args:
        agents: the seeds' agents (plain :class:`SAC`, same configuration and ranker); their current
            state (networks, optimiser state, update counter) is the starting point.
        generators: one generator per seed (:func:`seed_generator`).
    """

    def __init__(self, agents: Sequence[SAC], generators: Sequence[torch.Generator]) -> None:
        nn.Module.__init__(self)
        if not agents or len(agents) != len(generators):
            raise ValueError("StackedSAC needs one generator per agent, and at least one agent")
        first = check_stackable(agents[0])
        for a in agents[1:]:
            check_stackable(a)
            if a.cfg != first.cfg or a.ranker is not first.ranker and not _same_ranker(a.ranker, first.ranker):
                raise ConfigError("multi-seed training needs agents of one configuration and one ranker")
        self.cfg, self.ranker, self.action_dim = first.cfg, first.ranker, first.action_dim
        self.target_entropy, self.build = first.target_entropy, first.build
        self.num_seeds = len(agents)
        self.generators = list(generators)
        self.actor_belief = StackedBeliefEncoder([a.actor_belief for a in agents])  # type: ignore[assignment]
        self.actor = stack_mlp([a.actor for a in agents])
        self.critic = StackedCritic([a.critic for a in agents])
        self.critic_target = StackedCritic([a.critic_target for a in agents]).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.stack([a.log_alpha.detach() for a in agents]).view(-1, 1, 1).clone())
        self.register_buffer("updates", first.updates.detach().clone())
        # the agent's own optimisers (same class and hyperparameters) over the stacked tensors
        self.actor_opt = stack_optimizer(first.actor_opt, first, self)
        self.critic_opt = stack_optimizer(first.critic_opt, first, self)
        self.alpha_opt = stack_optimizer(first.alpha_opt, first, self)
        self._record_seed_shapes(first)
        self.load_seed_states([a.state_dict() for a in agents])

    # ------------------------------------------------------------------ hooks of SAC's loss code
    def _noise(self, mean: Tensor) -> Tensor:
        shape = mean.shape[1:]
        draws = [torch.randn(shape, generator=g, dtype=mean.dtype) for g in self.generators]
        return torch.stack(draws).to(mean.device)

    def _mean(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1).mean(dim=1)

    def _mse(self, a: Tensor, b: Tensor) -> Tensor:
        return self._mean(F.mse_loss(a, b, reduction="none"))

    # ------------------------------------------------------------------ acting over S x E users
    def _per_seed(self, x: Tensor) -> Tensor:
        return x.reshape(self.num_seeds, x.shape[0] // self.num_seeds, *x.shape[1:])

    @torch.no_grad()
    def act(self, slates: Tensor, clicks: Tensor, hidden: Any, deterministic: bool = False,
            privileged: Tensor | None = None) -> tuple[Tensor, Tensor, Any]:
        belief = self.actor_belief.step(self._per_seed(slates), self._per_seed(clicks), hidden)
        action, _ = self.policy(belief, deterministic)
        flat = action.reshape(-1, self.action_dim)
        return self.ranker.rank(flat), flat, belief

    @torch.no_grad()
    def random_act(self, slates: Tensor, clicks: Tensor, hidden: Any, width: float = 1.0
                   ) -> tuple[Tensor, Tensor, Any]:
        """Uniform actions in ``center +- width * scale`` (:meth:`Ranker.uniform_actions`'s arithmetic), each
        seed's from its own generator."""
        per_seed = slates.shape[0] // self.num_seeds
        u = torch.stack([torch.rand(per_seed, self.action_dim, generator=g) for g in self.generators])
        u = (u * 2 - 1).to(self.ranker.action_center.device)
        if width != 1.0:
            u = u * width
        action = (self.ranker.action_center + self.ranker.action_scale * u).reshape(-1, self.action_dim)
        return self.ranker.rank(action), action, hidden

    # ------------------------------------------------------------------ learning
    def update(self, episodes: dict[str, Tensor]) -> dict[str, float]:
        raise TypeError("a StackedSAC learns through update_seeds: one (S, B, ...) batch, one metrics dict per seed")

    def update_seeds(self, episodes: dict[str, Tensor]) -> list[dict[str, float]]:
        """One gradient step of every seed on its own batch (leading dimension S); metrics per seed."""
        metrics = self.update_step(episodes)
        table = torch.stack([v.reshape(self.num_seeds, -1)[:, 0] for v in metrics.values()], dim=1).tolist()
        return [dict(zip(metrics, row, strict=True)) for row in table]

    def _shared(self, key: str) -> bool:
        """State-dict entries common to every seed: the frozen ranker and the update counter."""
        return key.startswith("ranker.") or key == "updates"


def _same_ranker(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@torch.no_grad()
def evaluate_seeds(sim: TopicRec, agent: StackedSAC, seed: int, sessions: int, batch: int = 4096) -> Tensor:
    """(S, sessions) returns of every seed's deterministic policy on users ``0 .. sessions-1`` of ``seed``
    (:func:`~slate_rl.online.loop.evaluate` for each seed, all seeds' users in one simulator call)."""
    per_call = max(1, batch // agent.num_seeds)
    out = []
    for start in range(0, sessions, per_call):
        keys = user_keys(seed, start, min(per_call, sessions - start), sim.device)
        returns, _ = run_agent_sessions(sim, agent, keys.repeat(agent.num_seeds), "eval", record=False)
        out.append(returns.view(agent.num_seeds, -1))
    return torch.cat(out, dim=1)


def train_seeds(
    sim: TopicRec,
    agents: Sequence[Agent],
    cfg: OnlineConfig,
    seeds: Sequence[int],
    save_best: Callable[[int, Agent, LoopState], None],
    last_paths: Sequence[str | os.PathLike[str]],
    logger: RunLogger | None = None,
    progress: bool = True,
    fingerprints: Sequence[str] | None = None,
) -> list[LoopState]:
    """Train ``agents[i]`` on seed ``seeds[i]``'s users, all together (module doc); the multi-seed
    :func:`~slate_rl.online.loop.train_online`, with its schedule, validation, medium tracking and
    resume. ``save_best(i, agent, state)`` is called with seed ``i``'s agent whenever its validation
    improves; ``last_paths[i]`` is seed ``i``'s resume checkpoint, written under ``fingerprints[i]``. ``logger``
    gets every seed's metrics, under ``seed<s>/`` in a group of several (one run for the group)."""
    n = len(agents)
    check_seed_group(n, seeds, last_paths, fingerprints, "agent")
    sacs = [check_stackable(a) for a in agents]
    c = sim.config
    prints = [f"{fp}:{RNG_SCHEME}" for fp in (fingerprints or [""] * n)]
    lasts = [Path(p) for p in last_paths]

    def fresh() -> tuple[list[EpisodeBuffer], list[LoopState], list[torch.Generator]]:
        return ([EpisodeBuffer(cfg.buffer_capacity, c.episode_length, c.slate_size, sacs[0].action_dim, sim.device)
                 for _ in range(n)],
                [LoopState(curve=[], medium=MediumTracker(cfg.medium_fraction)) for _ in range(n)],
                [seed_generator(s) for s in seeds])

    buffers, states, gens = fresh()
    if not resume_group(seeds, lasts, sacs, lambda i: _load_last(lasts[i], sacs[i], buffers[i], states[i], prints[i],
                                                                 cfg.total_steps, gens[i]),
                        lambda: [s.step for s in states]):
        buffers, states, gens = fresh()
    stacked = StackedSAC(sacs, gens)
    step, sessions = states[0].step, states[0].sessions
    e = cfg.sessions_per_step
    bar = tqdm(total=cfg.total_steps, initial=step, desc=f"online x{n}", unit="step", disable=not progress,
               dynamic_ncols=True)
    metrics: list[dict[str, float]] = [{} for _ in range(n)]
    run_start, first_step = time.perf_counter(), step

    def prefix(i: int) -> str:
        """The logger's metric prefix of seed ``i``: none for one seed, ``seed<s>/`` in a group."""
        return f"seed{seeds[i]}/" if n > 1 else ""

    while step < cfg.total_steps:
        keys = torch.cat([user_keys(s, sessions, e, sim.device) for s in seeds])
        warming_up = sessions < cfg.warmup_sessions
        mode: Mode = "random" if warming_up else "train"
        returns, episodes = run_agent_sessions(sim, stacked, keys, mode, random_width=cfg.warmup_action_width)
        assert episodes is not None
        for i, buffer in enumerate(buffers):
            buffer.add({k: v[i * e:(i + 1) * e] for k, v in episodes.items()})
        sessions += e
        step += 1
        for st in states:
            st.sessions, st.step = sessions, step
            st.env_steps += e * c.episode_length
        if not warming_up:
            for _ in range(cfg.updates_per_step):
                batches = [b.sample_episodes(cfg.batch_size, generator=g) for b, g in zip(buffers, gens, strict=True)]
                metrics = stacked.update_seeds({k: torch.stack([b[k] for b in batches]) for k in batches[0]})
        bar.update(1)
        if step % cfg.val_interval == 0 or step == cfg.total_steps:
            vals = evaluate_seeds(sim, stacked, cfg.val_seed, cfg.val_sessions).mean(dim=1).tolist()
            train_returns = returns.view(n, e).mean(dim=1).tolist()
            for i, (st, val) in enumerate(zip(states, vals, strict=True)):
                sacs[i].load_state_dict(stacked.seed_state_dict(i))
                assert st.curve is not None and st.medium is not None
                st.curve.append([step, val])
                if val > st.best_val:
                    st.best_val, st.best_step = val, step
                    save_best(i, sacs[i], st)
                st.medium.observe(step, val, st.best_val, sacs[i])
                if logger is not None:
                    logger.log({f"{prefix(i)}{k}": v for k, v in
                                {"val_return": val, "train_return": train_returns[i], **metrics[i]}.items()}, step=step)
            bar.set_postfix(val=f"{sum(vals) / n:.1f}", best=f"{max(s.best_val for s in states):.1f}")
            if not progress:  # a plain line for log files
                rate = (step - first_step) / max(time.perf_counter() - run_start, 1e-9)
                print(f"online x{n}: step {step}/{cfg.total_steps}, validation "
                      f"{', '.join(f'{v:.1f}' for v in vals)} (best {', '.join(f'{s.best_val:.1f}' for s in states)}), "
                      f"{rate:.2f} steps/s", flush=True)
        if step % cfg.checkpoint_interval == 0 or step == cfg.total_steps:
            for i in range(n):
                sacs[i].load_state_dict(stacked.seed_state_dict(i))
                _save_last(lasts[i], sacs[i], buffers[i], states[i], prints[i], gens[i])
    bar.close()
    for i in range(n):
        sacs[i].load_state_dict(stacked.seed_state_dict(i))
    return states


def projected_hours(seed_sessions_per_second: float, seeds: int = 10, sessions: int = 100_000) -> float:
    """Hours of ``seeds`` x ``sessions`` sessions (one gradient step each) at a measured rate."""
    return math.inf if seed_sessions_per_second <= 0 else seeds * sessions / seed_sessions_per_second / 3600
