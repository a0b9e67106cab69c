"""Flow Q-learning (Park, Li & Levine 2025, "Flow Q-Learning"), as in the published code
(seohongpark/fql ``agents/fql.py``), on normalised actions ``a~ = (a - center) / scale`` in [-1, 1]^d.

Three networks besides the twin critics ``Q1, Q2`` and their Polyak target ``Q'``: a behaviour
flow ``v(s, x, t)`` (a velocity field, trained by flow matching to carry N(0, I) to the data's
actions) and a one-step policy ``mu(s, z)`` that maps a noise ``z`` to an action in one call::

    flow:    E |v(s, x_t, t) - (a~ - x_0)|^2,     x_0 ~ N(0, I), t ~ U(0, 1), x_t = (1 - t) x_0 + t a~
    actor:   alpha E |mu(s, z) - flow(s, z)|^2 - E Q(s, clip(mu(s, z))),     z ~ N(0, I)
    critic:  E (Q_i(s, a~) - y)^2,                y = r + gamma (1 - d) Q'(s', clip(mu(s', z')))

``flow(s, z)`` integrates ``v`` from ``z`` with ``flow_steps`` Euler steps and clips the result to
the box (no gradient: it is the distillation target); ``Q`` is the mean of the twin critics
(``q_agg: mean``, the published default) or their minimum, evaluated with the critics' current
weights detached. The Q term is not rescaled unless ``normalize_q_loss`` (then ``1 / mean |Q|``).
All losses are taken at the same parameters and descended together, the published single Adam
over every network (Adam is per parameter, so one optimiser per network is the same update).
Acting calls the one-step policy once: ``center + scale * clip(mu(s, z), -1, 1)`` with a fresh
``z ~ N(0, I)`` (``sample_actions``, the published evaluation) or ``z = 0``.

The policy is a generative model of the data's actions steered by Q, the line of work that
followed the Decision Diffuser; the one-step policy avoids back-propagating through the flow's
Euler steps and acts at the cost of one MLP call.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from slate_rl.models.nets import mlp, soft_update
from slate_rl.offline.base import OfflineAlgo, adam
from slate_rl.offline.config import FQLConfig
from slate_rl.offline.nets import EnsembleQ, relu_inplace


class FQL(OfflineAlgo):
    """A flow-matching behaviour policy, distilled into a one-step policy that maximises Q."""

    name = "fql"

    def __init__(self, obs_dim: int, action_center: Tensor, action_scale: Tensor, gamma: float,
                 total_steps: int = 1, config: FQLConfig | None = None) -> None:
        super().__init__(obs_dim, action_center, action_scale, gamma)
        cfg = self.cfg = config or FQLConfig()
        a, hidden = self.action_dim, [cfg.hidden] * cfg.layers
        self.flow = relu_inplace(mlp([obs_dim + a + 1, *hidden, a], cfg.actor_layer_norm))
        self.actor = relu_inplace(mlp([obs_dim + a, *hidden, a], cfg.actor_layer_norm))
        self.critic = EnsembleQ(obs_dim, a, cfg.hidden, cfg.layers, layer_norm=cfg.layer_norm)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.flow_opt = adam(self.flow.parameters(), cfg.lr)
        self.actor_opt = adam(self.actor.parameters(), cfg.lr)
        self.critic_opt = adam(self.critic.parameters(), cfg.lr)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic": self.critic_opt, "flow": self.flow_opt, "actor": self.actor_opt}

    def one_step(self, obs: Tensor, noise: Tensor) -> Tensor:
        """The one-step policy's normalised action for ``noise`` (unclipped)."""
        return self.actor(torch.cat([obs, noise], dim=-1))

    @torch.no_grad()
    def flow_actions(self, obs: Tensor, noise: Tensor) -> Tensor:
        """The behaviour flow's normalised action from ``noise``: ``flow_steps`` Euler steps, then clipped."""
        x, n = noise, self.cfg.flow_steps
        for i in range(n):
            t = torch.full((*obs.shape[:-1], 1), i / n, device=obs.device, dtype=obs.dtype)
            x = x + self.flow(torch.cat([obs, x, t], dim=-1)) / n
        return x.clamp(-1.0, 1.0)

    def _q(self, q: Tensor) -> Tensor:
        return q.mean(0) if self.cfg.q_agg == "mean" else q.min(0).values

    @torch.no_grad()
    def act(self, observations: Tensor) -> Tensor:
        shape = (*observations.shape[:-1], self.action_dim)
        z = (torch.randn(shape, device=observations.device) if self.cfg.sample_actions
             else torch.zeros(shape, device=observations.device))
        return self.action_center + self.action_scale * self.one_step(observations, z).clamp(-1.0, 1.0)

    def losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        obs, actions, cfg = batch["observations"], self.normalise(batch["actions"]), self.cfg
        b = obs.shape[0]
        with torch.no_grad():
            next_obs = batch["next_observations"]
            next_actions = self.one_step(next_obs, torch.randn_like(actions)).clamp(-1.0, 1.0)
            next_q = self._q(self.critic_target(next_obs, next_actions))
            y = batch["rewards"] + (1.0 - batch["dones"]) * self.gamma * next_q
        q = self.critic(obs, actions)
        critic_loss = ((q - y) ** 2).mean()
        # flow matching on straight paths from N(0, I) to the data's actions
        x0 = torch.randn_like(actions)
        t = torch.rand(b, 1, device=obs.device)
        x_t = (1.0 - t) * x0 + t * actions
        velocity = self.flow(torch.cat([obs, x_t, t], dim=-1))
        flow_loss = ((velocity - (actions - x0)) ** 2).mean()
        # one-step policy: close to the flow's action for the same noise, high Q
        z = torch.randn_like(actions)
        target = self.flow_actions(obs, z)
        pi = self.one_step(obs, z)
        distill_loss = ((pi - target) ** 2).mean()
        q_pi = self._q(self.critic(obs, pi.clamp(-1.0, 1.0), detach=True))
        q_loss = -q_pi.mean()
        if cfg.normalize_q_loss:
            q_loss = q_loss / q_pi.abs().mean().detach()
        actor_loss = cfg.alpha * distill_loss + q_loss
        q = q.detach()
        metrics = {"critic_loss": critic_loss.detach(), "flow_loss": flow_loss.detach(),
                   "distill_loss": distill_loss.detach(), "actor_loss": actor_loss.detach(),
                   "q1_mean": q[0].mean(), "q2_mean": q[1].mean(), "q_target_mean": y.mean(),
                   "q_pi_mean": q_pi.detach().mean()}
        return {"critic": critic_loss, "flow": flow_loss, "actor": actor_loss}, metrics

    def update_targets(self, n_updates: int) -> None:
        soft_update(self.critic_target, self.critic, self.cfg.tau)

