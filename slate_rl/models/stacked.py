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

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slate_rl.models.belief import BeliefEncoder, GRUSequence

_Opt = TypeVar("_Opt", bound=torch.optim.Optimizer)


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

    def forward(self, x: Tensor, detach: bool = False) -> Tensor:
        """``detach``: with detached parameters (no gradient reaches them)."""
        s, n_in = x.shape[0], x.shape[-1]
        flat = x.reshape(s, -1, n_in)
        weight, bias = (self.weight.detach(), self.bias.detach()) if detach else (self.weight, self.bias)
        out = torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2))
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


def stack_optimizer(opt: _Opt, seed_module: nn.Module, stacked: nn.Module) -> _Opt:
    """``opt`` (an optimiser of ``seed_module``) rebuilt over ``stacked``'s parameters of the same names: the same
    class and hyperparameters, one group. An element-wise optimiser (Adam) over S stacked tensors is S independent
    ones (their step counters coincide, as every seed steps together)."""
    names = {id(p): n for n, p in seed_module.named_parameters()}
    mine = dict(stacked.named_parameters())
    params = [mine[names[id(p)]] for group in opt.param_groups for p in group["params"]]
    return type(opt)(params, **opt.defaults)


class SeedStates:
    """Mixin of a module stacking S modules of one class: the state of seed ``i`` in the format of that class's
    ``state_dict()`` (``modules``, ``optimizers`` and any other entry, e.g. ``schedulers``) and back.

    The subclass calls :meth:`_record_seed_shapes` with one seed's module once its stacked parameters and
    optimisers exist, and says which state-dict entries every seed shares (``_shared``: frozen modules,
    counters, constants), which are stored once instead of stacked.
    """

    num_seeds: int
    _seed_shapes: dict[str, torch.Size]
    _param_names: dict[int, str]

    def _record_seed_shapes(self, seed_module: nn.Module) -> None:
        self._seed_shapes = {k: v.shape for k, v in nn.Module.state_dict(seed_module).items()}
        assert isinstance(self, nn.Module)
        self._param_names = {id(p): n for n, p in self.named_parameters()}

    if TYPE_CHECKING:  # provided by the stacked class (declared here for the type checker only)
        def _shared(self, key: str) -> bool: ...
        def optimizers(self) -> dict[str, torch.optim.Optimizer]: ...
        def state_dict(self) -> dict[str, Any]: ...
        def load_state_dict(self, state: dict[str, Any]) -> Any: ...

    def seed_state_dict(self, i: int) -> dict[str, Any]:
        """Seed ``i``'s state in the format of its class's ``state_dict()``."""
        stacked = self.state_dict()
        modules = {k: (v.clone() if self._shared(k) else v[i].reshape(self._seed_shapes[k]).clone())
                   for k, v in stacked["modules"].items()}
        optimizers = {}
        for name, opt in self.optimizers().items():
            shapes = [self._seed_shapes[self._param_names[id(p)]] for g in opt.param_groups for p in g["params"]]
            sd = stacked["optimizers"][name]
            state = {idx: {k: (t.clone() if k == "step" else t[i].reshape(shapes[idx]).clone()) for k, t in s.items()}
                     for idx, s in sd["state"].items()}  # Adam: a shared step counter, per-element moments
            optimizers[name] = {"state": state, "param_groups": copy.deepcopy(sd["param_groups"])}
        rest = {k: copy.deepcopy(v) for k, v in stacked.items() if k not in ("modules", "optimizers")}
        return {"modules": modules, "optimizers": optimizers, **rest}

    def load_seed_states(self, states: Sequence[dict[str, Any]]) -> None:
        """Load S states in the format of ``seed_state_dict`` (seed i's into slice i); the seeds must have made
        the same number of updates (shared entries come from the first)."""
        if len(states) != self.num_seeds:
            raise ValueError(f"{len(states)} states for {self.num_seeds} seeds")
        assert isinstance(self, nn.Module)
        mine = nn.Module.state_dict(self)
        modules = {k: (states[0]["modules"][k] if self._shared(k) else
                       torch.stack([s["modules"][k] for s in states]).reshape(mine[k].shape)) for k in mine}
        optimizers = {}
        for name, opt in self.optimizers().items():
            params = [p for g in opt.param_groups for p in g["params"]]
            per_seed = [s["optimizers"][name] for s in states]
            state = {idx: {k: (t if k == "step" else torch.stack([ps["state"][idx][k] for ps in per_seed])
                               .reshape(params[idx].shape)) for k, t in first.items()}
                     for idx, first in per_seed[0]["state"].items()}
            optimizers[name] = {"state": state, "param_groups": per_seed[0]["param_groups"]}
        rest = {k: v for k, v in states[0].items() if k not in ("modules", "optimizers")}
        self.load_state_dict({"modules": modules, "optimizers": optimizers, **rest})
