"""A plugin: an offline method defined in this one file and registered by config.yaml's ``plugins: [toy_method]``
(with this directory on ``PYTHONPATH``), the package unchanged. The method: a linear policy fitted to the data
actions by least squares, ``center + scale * tanh(W s + b)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slate_rl.offline.base import OfflineAlgo, adam
from slate_rl.offline.config import Method, TDSteps


@dataclass(frozen=True)
class ToyLinearConfig(TDSteps):
    """Linear behaviour cloning (the plugin test's method)."""

    SECTION: ClassVar[str] = "toylin"
    METHOD: ClassVar[Method] = Method("Linear BC", "toy_method:ToyLinear", "td", priority=1, small={"lr": 0.01})

    lr: float = 1e-3
    """Learning rate."""


class ToyLinear(OfflineAlgo):
    name = "toylin"

    def __init__(self, obs_dim: int, action_center: Tensor, action_scale: Tensor, gamma: float,
                 total_steps: int = 1, config: ToyLinearConfig | None = None) -> None:
        super().__init__(obs_dim, action_center, action_scale, gamma)
        self.cfg = config or ToyLinearConfig()
        self.actor = nn.Linear(obs_dim, self.action_dim)
        self.actor_opt = adam(self.actor.parameters(), self.cfg.lr)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt}

    @torch.no_grad()
    def act(self, observations: Tensor) -> Tensor:
        return self.squash(self.actor(observations))

    def losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        loss = F.mse_loss(torch.tanh(self.actor(batch["observations"])), self.normalise(batch["actions"]))
        return {"actor": loss}, {"actor_loss": loss.detach()}


OFFLINE_METHODS = (ToyLinearConfig,)
