"""SlateQ (Ie et al., IJCAI 2019): slate values decomposed into item values, with the
simulator's true click model (privileged, as in the paper's baseline).

Item values ``Q(b, i)`` (one output per item, from the GRU belief). A slate's value is
``sum_{i in A} P(click i | A) Q(b, i)``; acting takes the top-k items by
``relevance(i) * Q(b, i)`` (the paper's greedy top-k slate optimisation), with
epsilon-random slots while training. Learning is the SARSA form of the decomposition: for
every clicked item i of step t::

    Q(b_t, i) <- 1 + gamma * sum_{j in A_{t+1}} P(click j | A_{t+1}) Q'(b_{t+1}, j)

where ``A_{t+1}`` is the next slate shown and ``P`` the true click probabilities recorded in
the replay buffer; ``Q'`` is a Polyak-averaged target. The stored action is the slate.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slate_rl.core.errors import ConfigError
from slate_rl.models.belief import BeliefEncoder
from slate_rl.models.nets import mlp, soft_update
from slate_rl.online.agent import BeliefAgentConfig, SlateAgent


@dataclass(frozen=True)
class SlateQConfig(BeliefAgentConfig):
    """SlateQ hyperparameters."""

    tau: float = 0.002
    """Polyak averaging rate of the target network."""
    epsilon: float = 0.1
    """Probability that a slot shows a random item while training."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"slateq.epsilon must be in [0, 1], got {self.epsilon}")


class ItemQ(nn.Module):
    """Belief encoder and item-value head."""

    def __init__(self, belief: BeliefEncoder, num_items: int, hidden: int) -> None:
        super().__init__()
        self.belief = belief
        self.head = mlp([belief.hidden_dim, hidden, num_items])


class SlateQ(SlateAgent):
    """SlateQ with the true click model (privileged)."""

    name = "slateq"
    privileged = True

    def __init__(self, num_items: int, item_dim: int = 20, slate_size: int = 10,
                 config: SlateQConfig | None = None, item_table: Tensor | None = None) -> None:
        super().__init__()
        cfg = config or SlateQConfig()
        self.cfg, self.num_items, self.slate_size, self.action_dim = cfg, num_items, slate_size, slate_size
        self.q = ItemQ(BeliefEncoder(num_items, item_dim, slate_size, cfg.belief_dim, item_table), num_items,
                       cfg.hidden)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.opt = torch.optim.Adam(self.q.parameters(), lr=cfg.lr)
        self.updates: Tensor
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"q": self.opt}

    def buffer_extras(self) -> dict[str, tuple[int, ...]]:
        return {"click_probs": (self.slate_size,)}

    @torch.no_grad()
    def act(self, slates: Tensor, clicks: Tensor, hidden: Any, deterministic: bool = False,
            privileged: Tensor | None = None) -> tuple[Tensor, Tensor, Any]:
        if privileged is None:
            raise ValueError("SlateQ needs the relevance of every item (privileged) to act")
        belief = self.q.belief.step(slates, clicks, hidden)
        slate = (privileged * self.q.head(belief)).topk(self.slate_size, dim=1).indices
        if not deterministic and self.cfg.epsilon > 0:
            explore = torch.rand(slate.shape, device=slate.device) < self.cfg.epsilon
            slate = torch.where(explore, self.random_slates(slates.shape[0], slates.device), slate)
        return slate, slate.float(), belief


    def losses(self, ep: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        slates, clicks = ep["slates"], ep["clicks"]
        shown, clicked = slates[:, 1:], clicks[:, 1:]  # slate and clicks of step t+1, chosen from b_t
        q = self.q.head(self.q.belief(slates, clicks)[:, :-1]).gather(-1, shown)  # (B, H, k)
        with torch.no_grad():
            q_next = self.q_target.head(self.q_target.belief(slates, clicks)[:, 1:])  # values at b_{t+1}
            # value of the next slate actually shown: sum_j P(click j) Q'(b_{t+1}, j), 0 after the last step
            next_value = torch.zeros_like(ep["rewards"])
            next_value[:, :-1] = (ep["click_probs"][:, 1:] * q_next[:, :-1].gather(-1, shown[:, 1:])).sum(-1)
            y = 1.0 + self.cfg.gamma * next_value
        mask = clicked.float()
        n = mask.sum().clamp_min(1.0)
        loss = (F.mse_loss(q, y.unsqueeze(-1).expand_as(q), reduction="none") * mask).sum() / n
        return loss, {"q_loss": loss.detach(), "q_mean": q.detach().mean(), "clicked_items": mask.sum()}

    def update(self, episodes: dict[str, Tensor]) -> dict[str, float]:
        loss, metrics = self.losses(episodes)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        soft_update(self.q_target, self.q, self.cfg.tau)
        self.updates.add_(1)
        return {k: float(v) for k, v in metrics.items()}
