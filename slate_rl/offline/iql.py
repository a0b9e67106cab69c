"""Implicit Q-Learning (Kostrikov, Nair & Levine 2022, "Offline Reinforcement Learning with Implicit
Q-Learning"), as in CORL ``algorithms/offline/iql.py``.

With twin critics ``Q1, Q2``, their Polyak target ``Q'``, a state value ``V`` and the expectile
``k`` (CORL's ``iql_tau``), on normalised actions ``a~ = (a - center) / scale``::

    value:   E[ |k - 1(u < 0)| u^2 ],      u = min_i Q'_i(s, a) - V(s)
    critic:  mean_i (Q_i(s, a) - y)^2,     y = r + gamma (1 - d) V(s')
    actor:   E[ min(exp(beta u), 100) * -log pi(a~ | s) ],   pi = N(tanh(f(s)), exp(log_std)^2)

All three losses are taken at the same parameters (V(s') and u before the value step, as CORL
computes them); the actor's learning rate follows a cosine schedule over ``total_steps`` updates.
Actions are normalised to [-1, 1]^d (CORL's D4RL setting, ``max_action = 1``) for the critics
and the actor; with the deterministic actor the actor loss is ``|tanh(f(s)) - a~|^2`` instead.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from slate_rl.core.errors import ConfigError
from slate_rl.models.nets import mlp, soft_update
from slate_rl.offline.base import OfflineAlgo, adam
from slate_rl.offline.config import IQLConfig
from slate_rl.offline.nets import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    EnsembleQ,
    deterministic_actor,
    gaussian_log_prob,
    relu_inplace,
)


class IQL(OfflineAlgo):
    """Expectile value learning and advantage-weighted regression of the actor."""

    name = "iql"

    def __init__(self, obs_dim: int, action_center: Tensor, action_scale: Tensor, gamma: float,
                 total_steps: int = 1_000_000, config: IQLConfig | None = None) -> None:
        super().__init__(obs_dim, action_center, action_scale, gamma)
        if total_steps < 1:
            raise ConfigError(f"total_steps must be >= 1 (the actor's cosine schedule), got {total_steps}")
        cfg = self.cfg = config or IQLConfig()
        self.actor = deterministic_actor(obs_dim, self.action_dim, cfg.hidden, cfg.layers)
        self.log_std = None if cfg.deterministic else nn.Parameter(torch.zeros(self.action_dim))
        self.critic = EnsembleQ(obs_dim, self.action_dim, cfg.hidden, cfg.layers)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = relu_inplace(mlp([obs_dim, *[cfg.hidden] * cfg.layers, 1]))
        actor_params = [*self.actor.parameters(), *([] if self.log_std is None else [self.log_std])]
        self.actor_opt = adam(actor_params, cfg.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), cfg.qf_lr)
        self.value_opt = adam(self.value.parameters(), cfg.vf_lr)
        self.actor_schedule = CosineAnnealingLR(self.actor_opt, total_steps)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"value": self.value_opt, "critic": self.critic_opt, "actor": self.actor_opt}

    def schedulers(self) -> dict[str, Any]:
        return {"actor": self.actor_schedule}

    @torch.no_grad()
    def act(self, observations: Tensor) -> Tensor:
        return self.squash(self.actor(observations))

    def losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        obs, actions, cfg = batch["observations"], self.normalise(batch["actions"]), self.cfg
        with torch.no_grad():
            target_q = self.critic_target(obs, actions).min(0).values
            next_v = self.value(batch["next_observations"]).squeeze(-1)
            y = batch["rewards"] + (1.0 - batch["dones"]) * self.gamma * next_v
        v = self.value(obs).squeeze(-1)
        adv = target_q - v
        value_loss = (torch.abs(cfg.expectile - (adv < 0).float()) * adv**2).mean()
        q = self.critic(obs, actions)
        critic_loss = F.mse_loss(q, y.expand_as(q))  # = (mse(Q1, y) + mse(Q2, y)) / 2
        exp_adv = torch.exp(cfg.beta * adv.detach()).clamp(max=cfg.exp_adv_max)
        mean = torch.tanh(self.actor(obs))
        if self.log_std is None:
            bc = ((mean - actions) ** 2).sum(-1)
        else:
            bc = -gaussian_log_prob(actions, mean, self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX))
        actor_loss = (exp_adv * bc).mean()
        q = q.detach()
        metrics = {"value_loss": value_loss.detach(), "critic_loss": critic_loss.detach(),
                   "actor_loss": actor_loss.detach(), "q1_mean": q[0].mean(), "q2_mean": q[1].mean(),
                   "q_target_mean": target_q.mean(), "q_v_mean": v.detach().mean(), "adv_mean": adv.detach().mean()}
        return {"value": value_loss, "critic": critic_loss, "actor": actor_loss}, metrics

    def update_targets(self, n_updates: int) -> None:
        soft_update(self.critic_target, self.critic, self.cfg.tau)
