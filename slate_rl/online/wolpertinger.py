"""SAC+WkNN: the Wolpertinger architecture (Dulac-Arnold et al. 2015) on top of SAC.

The actor proposes a proto-action in R^(k*20) (one 20-d vector per slot, inside the item
table's bounds). Each slot keeps its ``neighbours`` nearest items (L2 in the simulator's item
table), and the slate is chosen greedily slot by slot: slot j takes the candidate that
maximises the target critic's min(Q1', Q2') with slots < j already fixed. The replay buffer
stores the embeddings of the items actually shown, so the critic learns on real actions; the
actor is trained by the SAC losses at its proto-action.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from slate_rl.models.rankers import KArgmax
from slate_rl.online.sac import SAC, SACConfig


class Wolpertinger(SAC):
    """SAC with k-nearest-neighbour refinement of its proto-action, greedy by the target Q."""

    name = "sac_wknn"

    def __init__(self, ranker: KArgmax, num_items: int, item_dim: int = 20, slate_size: int = 10,
                 config: SACConfig | None = None, item_table: Tensor | None = None, neighbours: int = 10) -> None:
        super().__init__(ranker, num_items, item_dim, slate_size, config, item_table)
        self.neighbours, self.slate_size, self.item_dim = neighbours, slate_size, item_dim

    @property
    def items(self) -> Tensor:
        return self.ranker.items  # type: ignore[return-value]

    def _nearest(self, proto: Tensor, n: int) -> Tensor:
        """(B, k, D) slot vectors -> (B, k, n) ids of the n nearest items (L2)."""
        dist = torch.cdist(proto, self.items.unsqueeze(0).expand(proto.shape[0], -1, -1))
        return dist.topk(n, dim=-1, largest=False).indices

    @torch.no_grad()
    def _refine(self, proto: Tensor, belief_target: Tensor) -> tuple[Tensor, Tensor]:
        b, k, d = proto.shape[0], self.slate_size, self.item_dim
        slots = proto.view(b, k, d)
        candidates = self._nearest(slots, self.neighbours)  # (B, k, n)
        chosen = torch.empty(b, k, dtype=torch.int64, device=proto.device)
        action = slots.clone()
        rows = torch.arange(b, device=proto.device)
        for j in range(k):
            trial = action.unsqueeze(1).repeat(1, self.neighbours, 1, 1)  # (B, n, k, D)
            trial[:, :, j] = self.items[candidates[:, j]]
            flat = trial.view(b, self.neighbours, k * d)
            q1, q2 = self.critic_target.q(belief_target.unsqueeze(1).expand(-1, self.neighbours, -1), flat)
            best = torch.minimum(q1, q2).argmax(dim=1)
            chosen[:, j] = candidates[rows, j, best]
            action[:, j] = self.items[chosen[:, j]]
        return chosen, action.view(b, k * d)

    @torch.no_grad()
    def act(self, slates: Tensor, clicks: Tensor, hidden: Any, deterministic: bool = False,
            privileged: Tensor | None = None) -> tuple[Tensor, Tensor, Any]:
        h_actor, h_target = hidden if hidden is not None else (None, None)
        h_actor = self.actor_belief.step(slates, clicks, h_actor)
        h_target = self.critic_target.belief.step(slates, clicks, h_target)
        proto, _ = self.policy(h_actor, deterministic)
        slate, action = self._refine(proto, h_target)
        return slate, action, (h_actor, h_target)

    @torch.no_grad()
    def random_act(self, slates: Tensor, clicks: Tensor, hidden: Any, width: float = 1.0
                   ) -> tuple[Tensor, Tensor, Any]:
        proto = self.ranker.uniform_actions(slates.shape[0], width)
        slate = self._nearest(proto.view(-1, self.slate_size, self.item_dim), 1).squeeze(-1)
        return slate, self.items[slate].flatten(1), hidden
