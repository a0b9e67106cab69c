"""A plugin: an offline method defined in this one file and registered by config.yaml's ``plugins: [toy_method]``
(with this directory on ``PYTHONPATH``), the package unchanged. The method: a linear policy fitted to the data
actions by least squares (BC's loss), ``center + scale * tanh(W s + b)``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from slate_rl.offline.base import OfflineAlgo, adam
from slate_rl.offline.bc import BC
from slate_rl.offline.config import Method, TDSteps


@dataclass(frozen=True)
class ToyLinearConfig(TDSteps):
    """Linear behaviour cloning (the plugin test's method)."""

    SECTION: ClassVar[str] = "toylin"
    METHOD: ClassVar[Method] = Method("Linear BC", "toy_method:ToyLinear", "td", priority=1, small={"lr": 0.01})

    lr: float = 1e-3
    """Learning rate."""


class ToyLinear(BC):
    """BC's loss and acting over a linear actor."""

    name = "toylin"

    def __init__(self, obs_dim: int, action_center: Tensor, action_scale: Tensor, gamma: float,
                 total_steps: int = 1, config: ToyLinearConfig | None = None) -> None:
        OfflineAlgo.__init__(self, obs_dim, action_center, action_scale, gamma)
        self.cfg = config or ToyLinearConfig()  # type: ignore[assignment]
        self.actor = nn.Sequential(nn.Linear(obs_dim, self.action_dim))
        self.actor_opt = adam(self.actor.parameters(), self.cfg.lr)


OFFLINE_METHODS = (ToyLinearConfig,)
