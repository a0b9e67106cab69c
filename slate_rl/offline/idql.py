"""IDQL: implicit diffusion Q-learning (Hansen-Estruch et al. 2023, "IDQL: Implicit Q-Learning as an
Actor-Critic Method with Diffusion Policies"), as in the published code (philippe-eecs/IDQL
``jaxrl5/agents/ddpm_iql/ddpm_iql_learner.py``), on normalised actions ``a~`` in [-1, 1]^d.

IQL's critics, with a diffusion model of the behaviour as the actor: the critics never see an
action the data does not hold, and the policy is the behaviour re-weighted by them at acting time::

    actor:   E |eps(s, sqrt(ah_t) a~ + sqrt(1 - ah_t) e, t) - e|^2    (summed over dimensions),
             t ~ U{0..T-1}, e ~ N(0, I), ah_t = prod_{k <= t} (1 - beta_k)   (VP schedule)
    value:   E[ |k - 1(u < 0)| u^2 ],   u = min_i Q'_i(s, a~) - V(s)
    critic:  mean_i (Q_i(s, a~) - y)^2,  y = r + gamma (1 - d) V(s')

One update steps them in the published order: the actor, the value function, then the critics
with the updated V, then the Polyak targets (``tau``) and the actor's moving average
(``actor_tau``); the actor's learning rate follows a cosine schedule over ``total_steps``.

Acting draws ``samples`` candidates per state from the moving-average actor (T reverse DDPM steps
from N(0, I), each clipped to the box) and plays the one with the largest ``min_i Q'_i``
(``select: greedy``, the published evaluation) or one drawn with weights ``k`` / ``1 - k`` by the
sign of its advantage (``select: expectile``, the published implicit policy).

The noise model is the published MLP one: learnt Fourier features of t (``time_dim``) through a
128-128 Mish MLP, concatenated with the noisy action and the state, then ``actor_layers`` Mish
layers of ``actor_hidden``.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import CosineAnnealingLR

from slate_rl.core.errors import ConfigError
from slate_rl.models.nets import mlp, soft_update
from slate_rl.offline.base import OfflineAlgo, adam
from slate_rl.offline.config import IDQLConfig
from slate_rl.offline.nets import EnsembleQ, relu_inplace


def vp_betas(steps: int, b_min: float = 0.1, b_max: float = 10.0) -> Tensor:
    """The variance-preserving schedule's betas for ``steps`` discrete steps (the published ``vp_beta_schedule``)."""
    t = torch.arange(1, steps + 1, dtype=torch.float64)
    alpha = torch.exp(-b_min / steps - 0.5 * (b_max - b_min) * (2 * t - 1) / steps**2)
    return (1.0 - alpha).float()


class NoiseModel(nn.Module):
    """eps(s, x, t): learnt Fourier features of t -> 128-128 Mish MLP, with x and s -> Mish MLP -> eps."""

    def __init__(self, obs_dim: int, action_dim: int, cfg: IDQLConfig) -> None:
        super().__init__()
        self.frequencies = nn.Parameter(0.2 * torch.randn(cfg.time_dim // 2, 1))
        self.time_net = nn.Sequential(nn.Linear(cfg.time_dim, 128), nn.Mish(), nn.Linear(128, 128))
        sizes = [action_dim + obs_dim + 128, *[cfg.actor_hidden] * cfg.actor_layers, action_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.Mish())
        self.net = nn.Sequential(*layers)

    def forward(self, obs: Tensor, x: Tensor, t: Tensor) -> Tensor:
        f = 2 * math.pi * t.unsqueeze(-1).float() @ self.frequencies.T
        cond = self.time_net(torch.cat([torch.cos(f), torch.sin(f)], dim=-1))
        return self.net(torch.cat([x, obs, cond], dim=-1))


class IDQL(OfflineAlgo):
    """IQL's expectile critics and a diffusion behaviour policy, combined by resampling when acting."""

    name = "idql"

    def __init__(self, obs_dim: int, action_center: Tensor, action_scale: Tensor, gamma: float,
                 total_steps: int = 1_000_000, config: IDQLConfig | None = None) -> None:
        super().__init__(obs_dim, action_center, action_scale, gamma)
        if total_steps < 1:
            raise ConfigError(f"total_steps must be >= 1 (the actor's cosine schedule), got {total_steps}")
        cfg = self.cfg = config or IDQLConfig()
        self.actor = NoiseModel(obs_dim, self.action_dim, cfg)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)  # the moving average that acts
        self.critic = EnsembleQ(obs_dim, self.action_dim, cfg.hidden, cfg.layers)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.value = relu_inplace(mlp([obs_dim, *[cfg.hidden] * cfg.layers, 1]))
        betas = vp_betas(cfg.diffusion_steps)
        self.betas: Tensor
        self.alphas_cumprod: Tensor
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphas_cumprod", torch.cumprod(1.0 - betas, 0), persistent=False)
        self.actor_opt = adam(self.actor.parameters(), cfg.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), cfg.critic_lr)
        self.value_opt = adam(self.value.parameters(), cfg.value_lr)
        self.actor_schedule = CosineAnnealingLR(self.actor_opt, total_steps)

    def target_rates(self) -> dict[str, float]:
        """The averaging rate of each target network (by attribute name)."""
        return {"actor_target": self.cfg.actor_tau, "critic_target": self.cfg.tau}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt, "value": self.value_opt, "critic": self.critic_opt}

    def schedulers(self) -> dict[str, Any]:
        return {"actor": self.actor_schedule}

    # ------------------------------------------------------------------ losses
    def actor_loss(self, obs: Tensor, actions: Tensor) -> Tensor:
        t = torch.randint(0, self.cfg.diffusion_steps, (obs.shape[0],), device=obs.device)
        noise = torch.randn_like(actions)
        ah = self.alphas_cumprod[t].unsqueeze(-1)
        noisy = ah.sqrt() * actions + (1.0 - ah).sqrt() * noise
        return ((self.actor(obs, noisy, t) - noise) ** 2).sum(-1).mean()

    def value_loss(self, obs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            target_q = self.critic_target(obs, actions).min(0).values
        v = self.value(obs).squeeze(-1)
        u = target_q - v
        return (torch.abs(self.cfg.expectile - (u < 0).float()) * u**2).mean(), target_q, v.detach()

    def critic_loss(self, batch: dict[str, Tensor], actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with torch.no_grad():
            next_v = self.value(batch["next_observations"]).squeeze(-1)
            y = batch["rewards"] + (1.0 - batch["dones"]) * self.gamma * next_v
        q = self.critic(batch["observations"], actions)
        return ((q - y) ** 2).mean(), q.detach(), y

    def losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        obs, actions = batch["observations"], self.normalise(batch["actions"])
        actor_loss = self.actor_loss(obs, actions)
        value_loss, target_q, v = self.value_loss(obs, actions)
        critic_loss, q, y = self.critic_loss(batch, actions)
        return ({"actor": actor_loss, "value": value_loss, "critic": critic_loss},
                self._metrics(actor_loss, value_loss, critic_loss, q, target_q, v, y))

    @staticmethod
    def _metrics(actor_loss: Tensor, value_loss: Tensor, critic_loss: Tensor, q: Tensor, target_q: Tensor, v: Tensor,
                 y: Tensor) -> dict[str, Tensor]:
        return {"actor_loss": actor_loss.detach(), "value_loss": value_loss.detach(),
                "critic_loss": critic_loss.detach(), "q1_mean": q[0].mean(), "q2_mean": q[1].mean(),
                "q_target_mean": target_q.mean(), "q_v_mean": v.mean(), "q_y_mean": y.mean()}

    def update(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The published order: actor step, value step, critic step on the updated V, then the targets."""
        obs, actions = batch["observations"], self.normalise(batch["actions"])
        actor_loss = self.actor_loss(obs, actions)
        self.descend(actor_loss, [self.actor_opt])
        self.actor_schedule.step()
        value_loss, target_q, v = self.value_loss(obs, actions)
        self.descend(value_loss, [self.value_opt])
        critic_loss, q, y = self.critic_loss(batch, actions)
        self.descend(critic_loss, [self.critic_opt])
        self.tick()
        soft_update(self.critic_target, self.critic, self.cfg.tau)
        soft_update(self.actor_target, self.actor, self.cfg.actor_tau)
        return self._metrics(actor_loss, value_loss, critic_loss, q, target_q, v, y)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def sample(self, obs: Tensor) -> Tensor:
        """One normalised action per row of ``obs`` from the moving-average actor (T reverse DDPM steps)."""
        cfg, betas, ah = self.cfg, self.betas, self.alphas_cumprod
        x = torch.randn(obs.shape[0], self.action_dim, device=obs.device)
        for step in range(cfg.diffusion_steps - 1, -1, -1):
            t = torch.full((obs.shape[0],), step, device=obs.device, dtype=torch.long)
            eps = self.actor_target(obs, x, t)
            alpha = 1.0 - betas[step]
            x = (x - betas[step] / (1.0 - ah[step]).sqrt() * eps) / alpha.sqrt()
            if step > 0:
                x = x + betas[step].sqrt() * cfg.ddpm_temperature * torch.randn_like(x)
            x = x.clamp(-1.0, 1.0)
        return x

    @torch.no_grad()
    def act(self, observations: Tensor) -> Tensor:
        cfg, b, n = self.cfg, observations.shape[0], self.cfg.samples
        obs = observations.repeat_interleave(n, dim=0)
        candidates = self.sample(obs)
        q = self.critic_target(obs, candidates).min(0).values.view(b, n)
        if cfg.select == "greedy":
            idx = q.argmax(-1)
        else:
            adv = q - self.value(observations).view(b, 1)
            weights = torch.where(adv > 0, cfg.expectile, 1.0 - cfg.expectile)
            idx = torch.multinomial(weights, 1).squeeze(-1)
        chosen = candidates.view(b, n, -1)[torch.arange(b, device=observations.device), idx]
        return self.action_center + self.action_scale * chosen

