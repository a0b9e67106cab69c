"""TD3+BC (Fujimoto & Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning"), as in CORL
``algorithms/offline/td3_bc.py``.

With ``pi`` the actor, ``Q1, Q2`` twin critics and primed target copies::

    critic:  sum_i (Q_i(s, a) - y)^2,   y = r + gamma (1 - d) min_i Q'_i(s', clip(pi'(s') + eps)),
             eps = clip(N(0, sigma^2), -c, c) * scale
    actor (every ``policy_freq`` updates, after the critic step):
             -lambda Q1(s, pi(s)) + (pi(s) - a)^2,   lambda = alpha / mean |Q1(s, pi(s))|  (no gradient)

followed by Polyak averaging of the three targets. Everything is computed on normalised actions
``(a - center) / scale`` in [-1, 1]^d, CORL's setting (D4RL boxes, ``max_action = 1``): the
policy is ``tanh(f(s))``, the noise is in those units and the BC term weighs each latent
dimension by its range.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor

from slate_rl.models.nets import soft_update
from slate_rl.offline.base import OfflineAlgo, adam
from slate_rl.offline.config import TD3BCConfig
from slate_rl.offline.nets import EnsembleQ, deterministic_actor


class TD3BC(OfflineAlgo):
    """TD3 with a behaviour-cloning term in the actor loss."""

    name = "td3bc"

    def __init__(self, obs_dim: int, action_center: Tensor, action_scale: Tensor, gamma: float,
                 total_steps: int = 1, config: TD3BCConfig | None = None) -> None:
        super().__init__(obs_dim, action_center, action_scale, gamma)
        cfg = self.cfg = config or TD3BCConfig()
        self.actor = deterministic_actor(obs_dim, self.action_dim, cfg.hidden, cfg.layers)
        self.critic = EnsembleQ(obs_dim, self.action_dim, cfg.hidden, cfg.layers)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor_opt = adam(self.actor.parameters(), cfg.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), cfg.critic_lr)
        self.last_actor_loss: Tensor
        self.register_buffer("last_actor_loss", torch.zeros(()), persistent=False)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic": self.critic_opt, "actor": self.actor_opt}

    @torch.no_grad()
    def act(self, observations: Tensor) -> Tensor:
        return self.squash(self.actor(observations))

    def critic_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        obs, actions = batch["observations"], self.normalise(batch["actions"])
        with torch.no_grad():
            noise = (torch.randn_like(actions) * self.cfg.policy_noise).clamp(-self.cfg.noise_clip, self.cfg.noise_clip)
            next_actions = (torch.tanh(self.actor_target(batch["next_observations"])) + noise).clamp(-1.0, 1.0)
            target_q = self.critic_target(batch["next_observations"], next_actions).min(0).values
            y = batch["rewards"] + (1.0 - batch["dones"]) * self.gamma * target_q
        q = self.critic(obs, actions)
        loss = 2.0 * F.mse_loss(q, y.expand_as(q))  # = mse(Q1, y) + mse(Q2, y)
        q = q.detach()
        return loss, {"critic_loss": loss.detach(), "q1_mean": q[0].mean(), "q2_mean": q[1].mean(),
                      "q_target_mean": y.mean()}

    def actor_loss(self, batch: dict[str, Tensor]) -> Tensor:
        pi = torch.tanh(self.actor(batch["observations"]))
        q = self.critic(batch["observations"], pi, detach=True, members=1)[0]
        lmbda = self.cfg.alpha / q.abs().mean().detach()
        return -lmbda * q.mean() + F.mse_loss(pi, self.normalise(batch["actions"]))

    def losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        critic_loss, metrics = self.critic_loss(batch)
        return {"critic": critic_loss, "actor": self.actor_loss(batch)}, metrics

    def update(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Critic step; every ``policy_freq`` updates an actor step on the updated critic, then the targets.

        ``actor_loss`` reports the last actor step's loss (0 before the first one).
        """
        n = self.tick()
        critic_loss, metrics = self.critic_loss(batch)
        self.descend(critic_loss, [self.critic_opt])
        if n % self.cfg.policy_freq == 0:
            actor_loss = self.actor_loss(batch)
            self.descend(actor_loss, [self.actor_opt])
            soft_update(self.critic_target, self.critic, self.cfg.tau)
            soft_update(self.actor_target, self.actor, self.cfg.tau)
            self.last_actor_loss = actor_loss.detach()
        metrics["actor_loss"] = self.last_actor_loss
        return metrics
