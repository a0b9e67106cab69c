"""Stacked SAC: S seeds of one SAC configuration as one agent, which the online loop
(:func:`~slate_rl.online.loop.train_seeds`) trains for every plain SAC agent, one seed included.

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

**Users.** It acts for S x E users, seed-major: rows ``i*E .. (i+1)*E-1`` are seed ``i``'s
(:func:`evaluate_seeds` for validation).

**Randomness.** Each seed draws its exploration noise and its warm-up actions from its own
``torch.Generator`` (:func:`seed_generator`; the loop draws that seed's replay indices from it
too), in an order fixed by its own schedule: a seed's stream does not depend on S or on its
neighbours, so a seed trained alone (S = 1) and among ten follows the same trajectory up to float
rounding (the batched matmuls may round differently). Initial networks: the caller builds agent
``i`` after ``torch.manual_seed(seeds[i])``.

**Outputs.** :meth:`SeedStates.seed_state_dict` gives seed ``i``'s state as an ordinary SAC's, which
the loop loads into ``agents[i]`` before its callbacks and checkpoints, so every file has the
format of one agent's (:func:`~slate_rl.online.registry.save_agent`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slate_rl.core import rng
from slate_rl.core.errors import ConfigError
from slate_rl.models.stacked import SeedStates, StackedBeliefEncoder, stack_mlp, stack_optimizer
from slate_rl.online.base import Agent
from slate_rl.online.rollouts import run_agent_sessions, user_keys
from slate_rl.online.sac import SAC, Critic
from slate_rl.sim.protocol import Simulator

RNG_SCHEME = "multiseed-v1"
"""Appended to every resume fingerprint of the online loop: a checkpoint of a loop that drew from other
streams (torch's global generator only) is not resumed."""
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
def evaluate_seeds(sim: Simulator, agent: StackedSAC, seed: int, sessions: int, batch: int = 4096) -> Tensor:
    """(S, sessions) returns of every seed's deterministic policy on users ``0 .. sessions-1`` of ``seed``
    (:func:`~slate_rl.online.loop.evaluate` for each seed, all seeds' users in one simulator call)."""
    per_call = max(1, batch // agent.num_seeds)
    out = []
    for start in range(0, sessions, per_call):
        keys = user_keys(seed, start, min(per_call, sessions - start), sim.device)
        returns, _ = run_agent_sessions(sim, agent, keys.repeat(agent.num_seeds), "eval", record=False)
        out.append(returns.view(agent.num_seeds, -1))
    return torch.cat(out, dim=1)


def projected_hours(seed_sessions_per_second: float, seeds: int = 10, sessions: int = 100_000) -> float:
    """Hours of ``seeds`` x ``sessions`` sessions (one gradient step each) at a measured rate."""
    return math.inf if seed_sessions_per_second <= 0 else seeds * sessions / seed_sessions_per_second / 3600
