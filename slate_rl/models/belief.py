"""GRU belief encoder: the agent's state from the history of slates and clicks.

Input per step: concat over the k slots of [item embedding (20), click (1)] = 210 values;
hidden state (the belief) has 20 dims. Actor and critic each own one encoder (GRU and item
table), trained by the policy loss and the Q loss respectively.

Timing (the off-by-one that leaks answers): the belief ``b_t`` is the GRU output after
observation ``t`` (observation 0 = reset slate and clicks); the action of step ``t+1`` is
chosen from ``b_t``, so it never sees the slate it is about to choose or its clicks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _mm_add(bias: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``bias + a @ b``: one matmul, or one per seed for stacked (S, ...) operands."""
    return torch.addmm(bias, a, b) if a.dim() == 2 else torch.baddbmm(bias, a, b)


class GRUSequence(torch.autograd.Function):
    """A single-layer GRU over a whole sequence from zero state, on precomputed input gates.

    Same arithmetic as ``nn.GRU`` (PyTorch's gate layout r, z, n; ``h' = n + z (h - n)``), but the
    backward pass is written out: everything that does not depend on the recursion (the gate
    derivatives) is computed for all steps at once, so each step of the backward loop is four small
    kernels instead of autograd's dozen. On CPU this is what a SAC update spends most of its time in.

    Inputs: ``gi`` (T, [S,] B, 3H) = x W_ih^T + b_ih, time-major; ``w_hh`` ([S,] 3H, H); ``b_hh``
    ([S,] 3H). The optional S is a leading seed dimension (models/stacked.py: S networks at once, a
    batched matmul per step). Output: hidden states (T, [S,] B, H).
    """

    @staticmethod
    def forward(ctx: Any, gi: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
        h_dim = gi.shape[-1] // 3
        w_r, w_z, w_n = (w.transpose(-1, -2) for w in w_hh.split(h_dim, dim=-2))
        b_r, b_z, b_n = (b.unsqueeze(-2) for b in b_hh.split(h_dim, dim=-1))
        gi_r, gi_z, gi_n = gi.split(h_dim, dim=-1)
        a_r, a_z = (gi_r + b_r).unbind(0), (gi_z + b_z).unbind(0)  # the hidden-gate biases folded in
        gi_n_t = gi_n.unbind(0)
        h = gi.new_zeros(*gi.shape[1:-1], h_dim)
        b_n = b_n.expand(h.shape)
        outs: list[Tensor] = []
        rs: list[Tensor] = []
        zs: list[Tensor] = []
        ns: list[Tensor] = []
        ghns: list[Tensor] = []
        for t in range(gi.shape[0]):  # per step: 3 small matmuls and 6 element-wise kernels, no indexing
            r = _mm_add(a_r[t], h, w_r).sigmoid_()
            z = _mm_add(a_z[t], h, w_z).sigmoid_()
            ghn = _mm_add(b_n, h, w_n)
            n = torch.addcmul(gi_n_t[t], r, ghn).tanh_()
            h = torch.addcmul(n, z, h - n)
            for store, value in ((outs, h), (rs, r), (zs, z), (ns, n), (ghns, ghn)):
                store.append(value)
        out, r_all, z_all, n_all, ghn_all = (torch.stack(x) for x in (outs, rs, zs, ns, ghns))
        ctx.save_for_backward(w_hh, out, r_all, z_all, n_all, ghn_all)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        w_hh, out, r, z, n, ghn = ctx.saved_tensors
        h_dim, lead = out.shape[-1], out.dim() - 3  # lead: 1 with a seed dimension, else 0
        h_prev = torch.cat([out.new_zeros(1, *out.shape[1:]), out[:-1]])
        a_n = (1 - z) * (1 - n * n)                 # d h' / d (n's pre-activation)
        a_z = (h_prev - n) * z * (1 - z)            # d h' / d (z's pre-activation)
        a_r = a_n * ghn * r * (1 - r)               # d h' / d (r's pre-activation)
        c_gh = torch.cat([a_r, a_z, a_n * r], dim=-1)  # (T, [S,] B, 3H): d h' / d (W_hh h + b_hh)
        c_t, z_t, g_t = c_gh.unbind(0), z.unbind(0), grad_out.contiguous().unbind(0)
        thrice = (1,) * (out.dim() - 2) + (3,)
        dhs: list[Tensor] = []
        dh_next = torch.zeros_like(out[0])
        for t in range(out.shape[0] - 1, -1, -1):
            dh = g_t[t] + dh_next
            dh_next = _mm_add(dh * z_t[t], dh.repeat(*thrice) * c_t[t], w_hh)
            dhs.append(dh)
        dh_all = torch.stack(dhs[::-1])
        dgh = dh_all.repeat(1, *thrice) * c_gh
        dgi = torch.cat([dgh[..., : 2 * h_dim], dh_all * a_n], dim=-1)
        # sum over steps and users of dgh^T h_prev, per seed: (T, [S,] B, .) -> ([S,] T * B, .)
        dgh_rows = dgh.movedim(0, lead).reshape(*out.shape[1:1 + lead], -1, 3 * h_dim)
        h_rows = h_prev.movedim(0, lead).reshape(*out.shape[1:1 + lead], -1, h_dim)
        return dgi, dgh_rows.transpose(-1, -2) @ h_rows, dgh.sum(dim=(0, dgh.dim() - 2))


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

    fused = True
    """On CPU, unroll the GRU with :class:`GRUSequence` (same arithmetic as ``nn.GRU``, about twice as
    fast forward and backward); ``False``, or a CUDA tensor, uses ``nn.GRU`` (cuDNN on GPU)."""

    def forward(self, slates: Tensor, clicks: Tensor) -> Tensor:
        """Beliefs after each observation: (B, T, k) -> (B, T, hidden), starting from zeros."""
        x = self.embed(slates, clicks)
        if not self.fused or x.device.type != "cpu" or x.dim() != 3:
            out, _ = self.gru(x)
            return out
        w_ih, b_ih, w_hh, b_hh = (getattr(self.gru, f"{n}_l0") for n in ("weight_ih", "bias_ih", "weight_hh",
                                                                          "bias_hh"))
        gi = F.linear(x.transpose(0, 1), w_ih, b_ih).contiguous()
        return GRUSequence.apply(gi, w_hh, b_hh).transpose(0, 1)

    def step(self, slates: Tensor, clicks: Tensor, hidden: Tensor | None) -> Tensor:
        """One observation (B, k) -> new belief (B, hidden); ``hidden`` None at episode start."""
        h0 = None if hidden is None else hidden.unsqueeze(0).contiguous()
        out, _ = self.gru(self.embed(slates, clicks).unsqueeze(1), h0)
        return out[:, 0]


def scratch_item_table(num_items: int, item_dim: int, device: torch.device | str = "cpu") -> Tensor:
    """A fresh N(0, 1) item table (the published code's ``from_scratch`` belief embeddings), drawn from
    torch's global generator."""
    return torch.randn(num_items, item_dim, device=device)
