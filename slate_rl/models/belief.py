"""GRU belief encoder: the agent's state from the history of slates and clicks.

Input per step: concat over the k slots of [item embedding (20), click (1)] = 210 values;
hidden state (the belief) has 20 dims. Actor and critic each own one encoder (GRU and item
table), trained by the policy loss and the Q loss respectively.

Timing (the off-by-one that leaks answers): the belief ``b_t`` is the GRU output after
observation ``t`` (observation 0 = reset slate and clicks); the action of step ``t+1`` is
chosen from ``b_t``, so it never sees the slate it is about to choose or its clicks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class BeliefEncoder(nn.Module):
    """GRU over observations with its own item table.

    Args:
        num_items, item_dim, slate_size: catalogue and slate sizes.
        hidden_dim: belief size (20 in the paper).
        item_table: initial item table (trainable); random N(0, 0.1^2) when ``None``.
    """

    def __init__(self, num_items: int = 1000, item_dim: int = 20, slate_size: int = 10, hidden_dim: int = 20,
                 item_table: Tensor | None = None) -> None:
        super().__init__()
        self.items = nn.Embedding(num_items, item_dim)
        if item_table is not None:
            self.items.weight.data.copy_(item_table)
        else:
            nn.init.normal_(self.items.weight, std=0.1)
        self.gru = nn.GRU(slate_size * (item_dim + 1), hidden_dim, batch_first=True)
        self.hidden_dim = hidden_dim

    def embed(self, slates: Tensor, clicks: Tensor) -> Tensor:
        """(..., k) slates and clicks -> (..., k * (item_dim + 1)) GRU inputs."""
        emb = self.items(slates.long())
        return torch.cat([emb, clicks.to(emb.dtype).unsqueeze(-1)], dim=-1).flatten(-2)

    def forward(self, slates: Tensor, clicks: Tensor) -> Tensor:
        """Beliefs after each observation: (B, T, k) -> (B, T, hidden), starting from zeros."""
        out, _ = self.gru(self.embed(slates, clicks))
        return out

    def step(self, slates: Tensor, clicks: Tensor, hidden: Tensor | None) -> Tensor:
        """One observation (B, k) -> new belief (B, hidden); ``hidden`` None at episode start."""
        h0 = None if hidden is None else hidden.unsqueeze(0).contiguous()
        out, _ = self.gru(self.embed(slates, clicks).unsqueeze(1), h0)
        return out[:, 0]


def scratch_item_table(num_items: int, item_dim: int, device: torch.device | str = "cpu") -> Tensor:
    """A fresh N(0, 1) item table (the published code's ``from_scratch`` belief embeddings), drawn from
    torch's global generator."""
    return torch.randn(num_items, item_dim, device=device)
