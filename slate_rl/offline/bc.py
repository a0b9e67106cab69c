"""Behaviour cloning: regression of the data action, as in CORL ``algorithms/offline/any_percent_bc.py``
(on the whole dataset)::

    actor:  (tanh(f(s)) - a~)^2,   a~ = (a - center) / scale

on normalised actions in [-1, 1]^d (CORL's D4RL setting, ``max_action = 1``): each latent
dimension weighs by its range. The policy acts ``center + scale * tanh(f(s))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from slate_rl.offline.base import OfflineAlgo, adam
from slate_rl.offline.config import BCConfig
from slate_rl.offline.nets import deterministic_actor


class BC(OfflineAlgo):
    """A deterministic policy fitted to the data actions by least squares."""

    name = "bc"

    def __init__(self, obs_dim: int, action_center: Tensor, action_scale: Tensor, gamma: float,
                 total_steps: int = 1, config: BCConfig | None = None) -> None:
        super().__init__(obs_dim, action_center, action_scale, gamma)
        cfg = self.cfg = config or BCConfig()
        self.actor = deterministic_actor(obs_dim, self.action_dim, cfg.hidden, cfg.layers)
        self.actor_opt = adam(self.actor.parameters(), cfg.lr)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt}

    @torch.no_grad()
    def act(self, observations: Tensor) -> Tensor:
        return self.squash(self.actor(observations))

    def losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        loss = F.mse_loss(torch.tanh(self.actor(batch["observations"])), self.normalise(batch["actions"]))
        return {"actor": loss}, {"actor_loss": loss.detach()}
