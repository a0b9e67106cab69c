"""Networks of S independent seeds stacked along a leading seed dimension.

Every stacked module is built from S ordinary modules of the same shape (:func:`stack_mlp`,
:class:`StackedBeliefEncoder`) and holds each of their parameters as one tensor ``(S, *shape)``
under the *same name* (``0.weight``, ``items.weight``, ``gru.weight_hh_l0``...), so that slice ``s``
of a stacked state dict is exactly the state dict of seed ``s``'s module. Inputs and outputs carry
the seed dimension first: ``(S, ..., features)``. Seed ``s``'s output depends on seed ``s``'s
parameters and inputs only; the arithmetic per seed is the module's own (a batched matmul per
layer instead of S small ones: that is where the speed comes from, as small ops cost mostly their
launch overhead).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slate_rl.models.belief import BeliefEncoder, GRUSequence


def _stack(params: Sequence[Tensor]) -> nn.Parameter:
    return nn.Parameter(torch.stack([p.detach() for p in params]).clone(),
                        requires_grad=params[0].requires_grad)


class StackedLinear(nn.Module):
    """S linear layers: ``(S, ..., in) -> (S, ..., out)``, ``y_s = x_s W_s^T + b_s``."""

    def __init__(self, layers: Sequence[nn.Linear]) -> None:
        super().__init__()
        if any(layer.bias is None for layer in layers):
            raise ValueError("StackedLinear needs layers with a bias")
        self.weight = _stack([layer.weight for layer in layers])
        self.bias = _stack([layer.bias for layer in layers])

    def forward(self, x: Tensor) -> Tensor:
        s, n_in = x.shape[0], x.shape[-1]
        flat = x.reshape(s, -1, n_in)
        out = torch.baddbmm(self.bias.unsqueeze(1), flat, self.weight.transpose(1, 2))
        return out.reshape(*x.shape[:-1], self.weight.shape[1])


def stack_mlp(nets: Sequence[nn.Sequential]) -> nn.Sequential:
    """S MLPs of :func:`~slate_rl.models.nets.mlp` (Linear and parameter-free layers) as one stacked MLP
    with the same layer indices (so the same state-dict keys)."""
    layers: list[nn.Module] = []
    for parts in zip(*nets, strict=True):
        first = parts[0]
        if isinstance(first, nn.Linear):
            layers.append(StackedLinear(parts))
        elif not any(True for _ in first.parameters()):
            layers.append(first)
        else:
            raise ValueError(f"cannot stack a {type(first).__name__} layer")
    return nn.Sequential(*layers)


class StackedBeliefEncoder(nn.Module):
    """S :class:`~slate_rl.models.belief.BeliefEncoder` s (item table + single-layer GRU) stacked.

    ``forward``: (S, B, T, k) slates and clicks -> (S, B, T, hidden) beliefs from zero state;
    ``step``: one observation (S, B, k) -> new belief (S, B, hidden). The parameters are named as in
    the encoder (``items.weight``, ``gru.weight_ih_l0``...).
    """

    GRU_PARAMS = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")

    def __init__(self, encoders: Sequence[BeliefEncoder]) -> None:
        super().__init__()
        for enc in encoders:
            if enc.gru.num_layers != 1 or enc.gru.bidirectional or not enc.gru.bias:
                raise ValueError("only single-layer, unidirectional GRUs with biases can be stacked")
        self.items = nn.ParameterDict({"weight": _stack([e.items.weight for e in encoders])})
        self.gru = nn.ParameterDict({n: _stack([getattr(e.gru, n) for e in encoders]) for n in self.GRU_PARAMS})
        self.hidden_dim = encoders[0].hidden_dim

    @property
    def num_seeds(self) -> int:
        return int(self.items["weight"].shape[0])

    def embed(self, slates: Tensor, clicks: Tensor) -> Tensor:
        """(S, ..., k) slates and clicks -> (S, ..., k * (item_dim + 1)) GRU inputs, seed s's table for seed s."""
        table = self.items["weight"]
        seeds, num_items, item_dim = table.shape
        offset = torch.arange(seeds, device=slates.device).mul_(num_items).view(seeds, *[1] * (slates.dim() - 1))
        emb = F.embedding(slates.long() + offset, table.reshape(seeds * num_items, item_dim))
        return torch.cat([emb, clicks.to(emb.dtype).unsqueeze(-1)], dim=-1).flatten(-2)

    def _input_gates(self, x: Tensor) -> Tensor:
        """(S, N, in) -> (S, N, 3H) = x W_ih^T + b_ih per seed."""
        g = self.gru
        return torch.baddbmm(g["bias_ih_l0"].unsqueeze(1), x, g["weight_ih_l0"].transpose(1, 2))

    def forward(self, slates: Tensor, clicks: Tensor) -> Tensor:
        x = self.embed(slates, clicks)  # (S, B, T, in)
        seeds, batch, steps, n_in = x.shape
        gi = self._input_gates(x.reshape(seeds, batch * steps, n_in)).reshape(seeds, batch, steps, -1)
        out = GRUSequence.apply(gi.permute(2, 0, 1, 3).contiguous(), self.gru["weight_hh_l0"],
                                        self.gru["bias_hh_l0"])
        return out.permute(1, 2, 0, 3)

    def step(self, slates: Tensor, clicks: Tensor, hidden: Tensor | None) -> Tensor:
        x = self.embed(slates, clicks)  # (S, B, in)
        gi = self._input_gates(x)
        h_dim = self.hidden_dim
        h = hidden if hidden is not None else x.new_zeros(*x.shape[:2], h_dim)
        gh = torch.baddbmm(self.gru["bias_hh_l0"].unsqueeze(1), h, self.gru["weight_hh_l0"].transpose(1, 2))
        i_r, i_z, i_n = gi.split(h_dim, dim=-1)
        h_r, h_z, h_n = gh.split(h_dim, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return n + z * (h - n)
