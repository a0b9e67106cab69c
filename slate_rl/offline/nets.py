"""Networks shared by the offline algorithms: a twin (ensemble) Q critic and Gaussian policy pieces."""

from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slate_rl.models.nets import mlp

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_M = TypeVar("_M", bound=nn.Module)


def relu_inplace(net: _M) -> _M:
    """Let the ReLUs of ``net`` overwrite their input, the output of the layer before them, which no
    backward pass needs: the same numbers with one allocation and one memory pass fewer per layer."""
    for module in net.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = True
    return net


class EnsembleQ(nn.Module):
    """``n`` independent Q(s, a) MLPs (``layers`` hidden layers of ``hidden`` units, ReLU), called together.

    The state-action input is built once for all members and their values come back stacked, shape
    ``(n, *batch)``. Members are separate ``nn.Linear`` stacks: on a CPU, batching the members into one
    ``baddbmm`` per layer measured slower than one ``addmm`` per member and layer (the matmuls dominate
    and ``bmm`` runs them less efficiently), so the fusion here is of the inputs, not of the weights.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: int, layers: int, n: int = 2,
                 layer_norm: bool = False) -> None:
        super().__init__()
        self.members = nn.ModuleList([relu_inplace(mlp([obs_dim + action_dim, *[hidden] * layers, 1], layer_norm))
                                      for _ in range(n)])

    @torch.no_grad()
    def orthogonal_(self, hidden_gain: float = math.sqrt(2.0), last_gain: float = 1e-2) -> None:
        """CORL's CQL critic initialisation: orthogonal weights (gain sqrt 2, last layer 1e-2), zero biases."""
        for net in self.members:
            linears = [m for m in net.children() if isinstance(m, nn.Linear)]
            for i, layer in enumerate(linears):
                nn.init.orthogonal_(layer.weight, gain=last_gain if i == len(linears) - 1 else hidden_gain)
                nn.init.zeros_(layer.bias)

    def forward(self, obs: Tensor, actions: Tensor, detach: bool = False, members: int | None = None) -> Tensor:
        """Q values of each member, shape ``(members, *actions.shape[:-1])``.

        ``obs`` (B, D) is broadcast over extra action dimensions (B, K, A). ``detach`` evaluates with
        detached weights (an actor loss then leaves the critic without gradient); ``members`` keeps the
        first members only (TD3+BC's actor uses Q1 alone).
        """
        batch = actions.shape[:-1]
        if actions.dim() > obs.dim():
            # (B, K) pairs as 2-D rows: F.linear on a 3-D input returns a view, and the in-place ReLU on a
            # view makes autograd copy the whole activation back (CopySlices) in the backward pass.
            obs = obs.unsqueeze(-2).expand(*batch, obs.shape[-1]).reshape(-1, obs.shape[-1])
            actions = actions.reshape(-1, actions.shape[-1])
        x = torch.cat([obs, actions], dim=-1)
        nets = list(self.members)[:members]
        outs = [_forward(net, x, detach) for net in nets]
        return torch.cat(outs, dim=-1).movedim(-1, 0).reshape(len(nets), *batch)


def _forward(net: nn.Module, x: Tensor, detach: bool) -> Tensor:
    if not detach:
        return net(x)
    for layer in net.children():
        if isinstance(layer, nn.Linear):
            x = F.linear(x, layer.weight.detach(), layer.bias.detach())
        elif isinstance(layer, nn.LayerNorm):
            x = F.layer_norm(x, layer.normalized_shape, layer.weight.detach(), layer.bias.detach(), layer.eps)
        else:
            x = layer(x)
    return x


def deterministic_actor(obs_dim: int, out_dim: int, hidden: int, layers: int) -> nn.Sequential:
    """The policy MLP of TD3+BC, BC and IQL; its output u becomes the action ``center + scale * tanh(u)``."""
    return relu_inplace(mlp([obs_dim, *[hidden] * layers, out_dim]))


def gaussian_log_prob(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """log N(x; mean, exp(log_std)^2), summed over the last dimension."""
    return (-0.5 * ((x - mean) * torch.exp(-log_std)) ** 2 - log_std - _HALF_LOG_2PI).sum(-1)


class TanhGaussianActor(nn.Module):
    """CQL's policy (CORL ``TanhGaussianPolicy``): u ~ N(mu(s), sigma(s)), normalised action tanh(u).

    ``log sigma = clamp(m * l(s) + o, -20, 2)`` with a learnt multiplier ``m`` (init 1) and offset
    ``o`` (init -1); the last layer starts at Xavier-uniform gain 1e-2 and zero bias, as in CORL.
    Log-probabilities are those of the normalised action in (-1, 1)^d (the tanh correction, no box
    scale): CQL's importance weights compare them with the uniform density on that cube.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: int, layers: int, log_std_multiplier: float = 1.0,
                 log_std_offset: float = -1.0) -> None:
        super().__init__()
        self.net = relu_inplace(mlp([obs_dim, *[hidden] * layers, 2 * action_dim]))
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        nn.init.xavier_uniform_(last.weight, gain=1e-2)
        nn.init.zeros_(last.bias)
        self.log_std_multiplier = nn.Parameter(torch.tensor(float(log_std_multiplier)))
        self.log_std_offset = nn.Parameter(torch.tensor(float(log_std_offset)))

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and clamped log standard deviation of u."""
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        log_std = (self.log_std_multiplier * log_std + self.log_std_offset).clamp(LOG_STD_MIN, LOG_STD_MAX)
        return mean, log_std

    @staticmethod
    def sample(mean: Tensor, log_std: Tensor, repeat: int | None = None) -> tuple[Tensor, Tensor]:
        """Reparameterised normalised actions tanh(u) and their log-probabilities.

        ``repeat`` draws that many actions per state, shape (B, repeat, A): the reference repeats the
        observations before the network, which gives the same distribution for K times the work.
        """
        if repeat is not None:
            mean = mean.unsqueeze(1).expand(-1, repeat, -1)
            log_std = log_std.unsqueeze(1).expand(-1, repeat, -1)
        u = mean + torch.exp(log_std) * torch.randn_like(mean)
        return torch.tanh(u), gaussian_log_prob(u, mean, log_std) - tanh_log_det(u)

    @staticmethod
    def log_prob(mean: Tensor, log_std: Tensor, normalised_actions: Tensor) -> Tensor:
        """Log-probability of given normalised actions (clipped inside (-1, 1) so that atanh is finite)."""
        u = torch.atanh(normalised_actions.clamp(-1.0 + 1e-6, 1.0 - 1e-6))
        return gaussian_log_prob(u, mean, log_std) - tanh_log_det(u)


def tanh_log_det(u: Tensor) -> Tensor:
    """sum log |d tanh(u) / du|, in torch's stable form 2 (log 2 - u - softplus(-2u))."""
    return (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
