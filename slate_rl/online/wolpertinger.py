"""SAC+WkNN: the Wolpertinger architecture (Dulac-Arnold et al. 2015) on top of SAC.

The actor proposes a proto-action in R^(k*20) (one 20-d vector per slot, inside the item
table's bounds). Each slot keeps its ``neighbours`` nearest items (L2 in the simulator's item
table), and the slate is chosen greedily slot by slot: slot j takes the candidate that
maximises the target critic's min(Q1', Q2') with slots < j already fixed. The replay buffer
stores the embeddings of the items actually shown, so the critic learns on real actions; the
actor is trained by the SAC losses at its proto-action. This is the ``corrected`` variant (tag
``sac_wknn_corrected``).

The ``published`` variant (tag ``sac_wknn``, the default) reproduces the published code
(naver/gems, ``WolpertingerSAC``), bugs included:

* off by one: the critic learns ``Q(b_t, slate of observation t)``, the slate ``b_t`` has
  already seen, instead of the slate chosen from ``b_t``;
* the refinement scores candidates with the target critic's *first* Q network fed the *actor's*
  belief, and when choosing slot j fills slots j..k-1 with the candidate (slots < j fixed);
* the proto-action is read as (item_dim, k) for the k-NN search (slot j's query is every k-th
  coordinate), while the critic reads the same vector slot by slot;
* warm-up slates are k uniformly random items.

The k-NN table is the ranker's: with ``belief_table: scratch`` (the default, as published) a
frozen copy of the critic's initial N(0, 1) belief table; with ``ranker`` the simulator's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from slate_rl.core.config import Variant
from slate_rl.models.rankers import KArgmax
from slate_rl.online.base import AgentInputs
from slate_rl.online.sac import SAC, SACConfig


class Wolpertinger(SAC):
    """SAC with k-nearest-neighbour refinement of its proto-action, greedy by the target Q."""

    name = "sac_wknn"

    def __init__(self, ranker: KArgmax, num_items: int, item_dim: int = 20, slate_size: int = 10,
                 config: SACConfig | None = None, item_table: Tensor | None = None, neighbours: int = 10,
                 variant: Variant = "corrected") -> None:
        super().__init__(ranker, num_items, item_dim, slate_size, config, item_table)
        self.neighbours, self.slate_size, self.item_dim, self.variant = neighbours, slate_size, item_dim, variant
        self.num_items = num_items

    @property
    def items(self) -> Tensor:
        return self.ranker.items  # type: ignore[return-value]

    def _nearest(self, proto: Tensor, n: int) -> Tensor:
        """(B, k, D) slot vectors -> (B, k, n) ids of the n nearest items (L2)."""
        dist = torch.cdist(proto, self.items.unsqueeze(0).expand(proto.shape[0], -1, -1))
        return dist.topk(n, dim=-1, largest=False).indices

    @torch.no_grad()
    def _refine_published(self, proto: Tensor, belief_actor: Tensor) -> tuple[Tensor, Tensor]:
        """The published refinement (see the module doc)."""
        b, k, d = proto.shape[0], self.slate_size, self.item_dim
        candidates = self._nearest(proto.view(b, d, k).transpose(1, 2), self.neighbours)  # (B, k, n)
        chosen = torch.empty(b, k, dtype=torch.int64, device=proto.device)
        action = torch.zeros(b, k, d, device=proto.device)
        rows = torch.arange(b, device=proto.device)
        for j in range(k):
            trial = action.unsqueeze(1).repeat(1, self.neighbours, 1, 1)  # (B, n, k, D)
            trial[:, :, j:] = self.items[candidates[:, j]].unsqueeze(2)  # the candidate in slots j..k-1
            q1 = self.critic_target.q1(torch.cat([belief_actor.unsqueeze(1).expand(-1, self.neighbours, -1),
                                                  trial.view(b, self.neighbours, k * d)], dim=-1)).squeeze(-1)
            chosen[:, j] = candidates[rows, j, q1.argmax(dim=1)]
            action[:, j] = self.items[chosen[:, j]]
        return chosen, action.view(b, k * d)

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
        if self.variant == "published":
            slate, action = self._refine_published(proto, h_actor)
        else:
            slate, action = self._refine(proto, h_target)
        return slate, action, (h_actor, h_target)

    def critic_loss(self, ep: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        if self.variant == "published":  # the critic learns on observation t's slate (off by one)
            h = ep["rewards"].shape[1]
            ep = {**ep, "actions": self.items[ep["slates"][:, :h]].flatten(-2)}
        return super().critic_loss(ep)

    @torch.no_grad()
    def random_act(self, slates: Tensor, clicks: Tensor, hidden: Any, width: float = 1.0
                   ) -> tuple[Tensor, Tensor, Any]:
        if self.variant == "published":
            slate = torch.randint(0, self.num_items, (slates.shape[0], self.slate_size), device=slates.device)
            return slate, self.items[slate].flatten(1), hidden
        proto = self.ranker.uniform_actions(slates.shape[0], width)
        slate = self._nearest(proto.view(-1, self.slate_size, self.item_dim), 1).squeeze(-1)
        return slate, self.items[slate].flatten(1), hidden


def build_sac_wknn(inputs: AgentInputs) -> Wolpertinger:
    """SAC+WkNN over the simulator's table; with ``belief_table`` ``scratch`` (the published code) its k-NN table is
    a frozen copy of the agent's scratch table, its own (restored from its checkpoints)."""
    table = inputs.encoder_table(inputs.sim_items)
    assert table is not None
    scratch = inputs.belief_table == "scratch"
    agent = Wolpertinger(KArgmax(table.clone() if scratch else table, inputs.slate_size), inputs.num_items,
                         table.shape[1], inputs.slate_size, inputs.config, table, variant=inputs.variant)
    agent.own_ranker = scratch
    return agent
