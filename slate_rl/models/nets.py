"""Small network pieces shared by every model: MLPs and Polyak averaging."""

from __future__ import annotations

import torch
from torch import nn


def mlp(sizes: list[int] | tuple[int, ...], layer_norm: bool = False) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last); ``layer_norm`` adds a LayerNorm after each
    hidden ReLU (Linear, ReLU, LayerNorm: the order of FQL's and IDQL's value networks)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if layer_norm:
                layers.append(nn.LayerNorm(b))
    return nn.Sequential(*layers)


@torch.no_grad()
def soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) * target + tau * source, for all parameters, in one fused call."""
    t: list[torch.Tensor] = list(target.parameters())
    s: list[torch.Tensor] = list(source.parameters())
    torch._foreach_lerp_(t, s, tau)
