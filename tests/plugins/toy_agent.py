"""A plugin: an online agent defined in this one file and registered by config.yaml's ``plugins: [toy_agent]``
(with this directory on ``PYTHONPATH``), the package unchanged. The agent: a popularity bandit. It keeps one
logit per item, shows the 10 highest (Gumbel-perturbed while training: sampling without replacement from their
softmax) and learns the logits from the clicks on every slate in its replay batch (logistic loss per shown
item). It ignores the user's history: a floor that any belief-based agent should beat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slate_rl.core.errors import ConfigError
from slate_rl.online.base import AgentInputs, SlateAgent
from slate_rl.online.config import AgentKind


@dataclass(frozen=True)
class ToyPopularityConfig:
    """Popularity bandit (the plugin test's agent)."""

    SECTION: ClassVar[str] = "toypop"

    lr: float = 0.05
    """Adam learning rate of the item logits."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"toypop.lr must be > 0, got {self.lr}")


class ToyPopularity(SlateAgent):
    """One logit per item; slates are the top 10 (perturbed while training)."""

    name = "toypop"

    def __init__(self, num_items: int, slate_size: int, config: ToyPopularityConfig) -> None:
        super().__init__()
        self.cfg, self.num_items, self.slate_size, self.action_dim = config, num_items, slate_size, slate_size
        self.logits = nn.Parameter(torch.zeros(num_items))
        self.opt = torch.optim.Adam([self.logits], lr=config.lr)
        self.updates: Tensor
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def act(self, slates: Tensor, clicks: Tensor, hidden: Any, deterministic: bool = False,
            privileged: Tensor | None = None) -> tuple[Tensor, Tensor, Any]:
        scores = self.logits.expand(slates.shape[0], -1)
        if not deterministic:
            scores = scores - torch.log(-torch.log(torch.rand_like(scores).clamp_min(1e-20)))
        slate = scores.topk(self.slate_size, dim=1).indices
        return slate, slate.float(), hidden

    def update(self, episodes: dict[str, Tensor]) -> dict[str, float]:
        shown, clicked = episodes["slates"], episodes["clicks"].float()
        loss = F.binary_cross_entropy_with_logits(self.logits[shown], clicked)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.updates.add_(1)
        return {"loss": float(loss.detach()), "click_rate": float(clicked.mean())}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"logits": self.opt}


def build_toy_popularity(inputs: AgentInputs) -> ToyPopularity:
    return ToyPopularity(inputs.num_items, inputs.slate_size, inputs.config)


ONLINE_AGENTS = (AgentKind("toypop", "Popularity", "toy_agent:build_toy_popularity", ToyPopularityConfig,
                           small={"lr": 0.1}),)
"""An online agent from a plugin (``tests/plugins/toy_agent.py``, one file, no edit of the package): its
registration gives it a tag, a config section and schema, ``train-agent`` options, a display name and the
conformance tests, and the tiny pipeline trains, tests and reports it."""
