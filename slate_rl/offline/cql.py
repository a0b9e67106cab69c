"""Conservative Q-Learning (Kumar et al. 2020, "Conservative Q-Learning for Offline Reinforcement
Learning"), CQL(H) on SAC as in CORL ``algorithms/offline/cql.py``.

With the tanh-Gaussian policy ``pi``, temperature ``alpha``, twin critics ``Q1, Q2`` and their
Polyak targets, K sampled actions per state and normalised actions ``(a - center) / scale`` in
[-1, 1]^d (CORL's D4RL setting, ``max_action = 1``)::

    critic_i: (Q_i(s, a) - y)^2 + cql_alpha * (T log sum_j exp(Q_i(s, a_j) / T - log w_j) - Q_i(s, a))
              y = r + gamma (1 - d) min_i Q'_i(s', a'),   a' ~ pi(s')
              a_j: K uniform actions (w = 0.5^d), K from pi(s) and K from pi(s') (w = pi(a_j)),
              all evaluated at s (importance sampling; without it the data action joins, w = 1)
    actor:    alpha log pi(a~ | s) - min_i Q_i(s, a~),  a~ ~ pi(s)   (log-likelihood of a for bc_steps)
    alpha:    -log alpha * (log pi(a~ | s) - d)

All losses are taken at the same parameters, as CORL does before its optimiser steps. The policy
network runs once per state: the K samples per state share its output (CORL repeats the states K
times before the network, the same distribution for more work). Options of CORL kept: max-backup,
entropy backup, Lagrange alpha', clipped differences, BC warm-up steps.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slate_rl.models.nets import soft_update
from slate_rl.offline.base import OfflineAlgo, adam
from slate_rl.offline.config import CQLConfig
from slate_rl.offline.nets import EnsembleQ, TanhGaussianActor


class CQL(OfflineAlgo):
    """SAC with the conservative penalty on the critics."""

    name = "cql"

    def __init__(self, obs_dim: int, action_center: Tensor, action_scale: Tensor, gamma: float,
                 total_steps: int = 1, config: CQLConfig | None = None) -> None:
        super().__init__(obs_dim, action_center, action_scale, gamma)
        cfg = self.cfg = config or CQLConfig()
        self.actor = TanhGaussianActor(obs_dim, self.action_dim, cfg.hidden, cfg.layers, cfg.log_std_multiplier)
        self.critic = EnsembleQ(obs_dim, self.action_dim, cfg.hidden, cfg.layers)
        if cfg.orthogonal_init:
            self.critic.orthogonal_()
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.target_entropy = -float(self.action_dim)
        self.actor_opt = adam(self.actor.parameters(), cfg.policy_lr)
        self.critic_opt = adam(self.critic.parameters(), cfg.qf_lr)
        self._opts = {"actor": self.actor_opt, "critic": self.critic_opt}
        if cfg.auto_entropy:
            self.log_alpha = nn.Parameter(torch.zeros(()))
            self._opts["alpha"] = adam([self.log_alpha], cfg.policy_lr)
        if cfg.lagrange:
            self.log_alpha_prime = nn.Parameter(torch.ones(()))
            self._opts["alpha_prime"] = adam([self.log_alpha_prime], cfg.qf_lr)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return dict(self._opts)

    @torch.no_grad()
    def act(self, observations: Tensor) -> Tensor:
        return self.squash(self.actor(observations)[0])

    def losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        cfg, n = self.cfg, self.cfg.n_actions
        obs, actions, next_obs = batch["observations"], self.normalise(batch["actions"]), batch["next_observations"]
        losses: dict[str, Tensor] = {}
        mean, log_std = self.actor(obs)
        new_actions, log_pi = self.actor.sample(mean, log_std)
        if cfg.auto_entropy:
            losses["alpha"] = -(self.log_alpha * (log_pi.detach() + self.target_entropy)).mean()
            alpha = self.log_alpha.detach().exp() * cfg.alpha_multiplier
        else:
            alpha = obs.new_tensor(cfg.alpha_multiplier)
        if self._n_updates < cfg.bc_steps:  # this is update number _n_updates + 1
            log_probs = self.actor.log_prob(mean, log_std, actions)
            losses["actor"] = (alpha * log_pi - log_probs).mean()
        else:
            q_new = self.critic(obs, new_actions, detach=True).min(0).values
            losses["actor"] = (alpha * log_pi - q_new).mean()

        with torch.no_grad():
            next_mean, next_log_std = self.actor(next_obs)
            if cfg.max_target_backup:
                next_actions, next_log_pi = self.actor.sample(next_mean, next_log_std, repeat=n)
                target_q, best = self.critic_target(next_obs, next_actions).min(0).values.max(-1)
                next_log_pi = next_log_pi.gather(-1, best.unsqueeze(-1)).squeeze(-1)
            else:
                next_actions, next_log_pi = self.actor.sample(next_mean, next_log_std)
                target_q = self.critic_target(next_obs, next_actions).min(0).values
            if cfg.backup_entropy:
                target_q = target_q - alpha * next_log_pi
            y = batch["rewards"] + (1.0 - batch["dones"]) * self.gamma * target_q
            random_actions = torch.rand_like(actions.unsqueeze(1).expand(-1, n, -1)) * 2.0 - 1.0
            current_actions, current_log_pi = self.actor.sample(mean.detach(), log_std.detach(), repeat=n)
            next_sampled, next_sampled_log_pi = self.actor.sample(next_mean, next_log_std, repeat=n)
            sampled = torch.cat([random_actions, next_sampled, current_actions], dim=1)

        # One critic evaluation for the data actions and the 3 n sampled ones: (2, B, 1 + 3 n)
        q_all = self.critic(obs, torch.cat([actions.unsqueeze(1), sampled], dim=1))
        q_pred = q_all[..., 0]
        td_loss = 2.0 * F.mse_loss(q_pred, y.expand_as(q_pred))  # = mse(Q1, y) + mse(Q2, y)
        if cfg.importance_sample:
            log_w = torch.cat([actions.new_full((actions.shape[0], n), self.action_dim * math.log(0.5)),
                               next_sampled_log_pi, current_log_pi], dim=1)
            cat_q = q_all[..., 1:] - log_w
        else:
            cat_q = q_all
        ood = torch.logsumexp(cat_q / cfg.temp, dim=-1) * cfg.temp
        diff = ood - q_pred
        if math.isfinite(cfg.clip_diff_min) or math.isfinite(cfg.clip_diff_max):
            diff = diff.clamp(cfg.clip_diff_min, cfg.clip_diff_max)
        diff = diff.mean(-1)  # (2,)
        if cfg.lagrange:
            alpha_prime = self.log_alpha_prime.exp().clamp(0.0, 1e6)
            losses["alpha_prime"] = -0.5 * (alpha_prime * cfg.cql_alpha * (diff.detach() - cfg.target_action_gap)).sum()
            cql_loss = (alpha_prime.detach() * cfg.cql_alpha * (diff - cfg.target_action_gap)).sum()
        else:
            cql_loss = cfg.cql_alpha * diff.sum()
        losses["critic"] = td_loss + cql_loss

        q_all, q_pred = q_all.detach(), q_pred.detach()
        metrics = {"critic_loss": losses["critic"].detach(), "td_loss": td_loss.detach(),
                   "cql_loss": cql_loss.detach(), "actor_loss": losses["actor"].detach(), "alpha": alpha,
                   "log_pi": log_pi.detach().mean(), "q1_mean": q_pred[0].mean(), "q2_mean": q_pred[1].mean(),
                   "q_target_mean": target_q.mean(), "q_random_mean": q_all[..., 1:n + 1].mean(),
                   "q_policy_mean": q_all[..., 2 * n + 1:].mean(), "q_ood_mean": ood.detach().mean()}
        if cfg.auto_entropy:
            metrics["alpha_loss"] = losses["alpha"].detach()
        if cfg.lagrange:
            metrics["alpha_prime"] = alpha_prime.detach()
        return losses, metrics

    def update_targets(self, n_updates: int) -> None:
        if n_updates % self.cfg.target_update_period == 0:
            soft_update(self.critic_target, self.critic, self.cfg.tau)
