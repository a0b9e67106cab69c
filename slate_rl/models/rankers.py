"""Rankers: turn an agent's continuous action into a slate, behind one interface.

A ranker has an ``action_dim``, per-dimension action bounds (``action_center``,
``action_scale``: an agent squashes its action into centre +- scale) and a batched
``rank(actions) -> slates``. Three kinds:

* :class:`GeMSRanker`: action z in R^d decoded by the GeMS decoder (argmax per slot);
* :class:`TopK`: action in R^20, the k items with the highest dot product;
* :class:`KArgmax`: action in R^(k*20), slot j takes the argmax of its own 20-d part.

GeMS rankers are saved as a checkpoint of tensors plus JSON metadata (loaded with
``weights_only=True``) carrying everything needed to rebuild the decoder and its bounds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slate_rl.core.checks import metadata_object, require_finite
from slate_rl.core.errors import ArtifactError
from slate_rl.core.io import load_checkpoint, save_torch
from slate_rl.models.gems import GeMS

GEMS_CKPT_FORMAT = "slate_rl.gems"
GEMS_CKPT_VERSION = 1


class Ranker(nn.Module):
    """Base: bounds as buffers, ``rank`` implemented by subclasses."""

    kind = "ranker"
    action_center: Tensor
    action_scale: Tensor

    def __init__(self, action_center: Tensor, action_scale: Tensor, slate_size: int) -> None:
        super().__init__()
        if action_center.shape != action_scale.shape or action_center.ndim != 1:
            raise ValueError("action_center and action_scale must be 1-d tensors of the same length")
        self.register_buffer("action_center", action_center.detach().clone().float())
        self.register_buffer("action_scale", action_scale.detach().clone().float())
        self.slate_size = slate_size

    @property
    def action_dim(self) -> int:
        return int(self.action_center.shape[0])

    def bounds(self) -> tuple[Tensor, Tensor]:
        """Lowest and highest action per dimension."""
        return self.action_center - self.action_scale, self.action_center + self.action_scale

    def uniform_actions(self, batch: int, width: float = 1.0) -> Tensor:
        """``batch`` actions drawn uniformly in ``center +- width * scale`` (the whole box at width 1;
        the published warm-up draws ``center + scale * (U(0, 1) - 0.5)``, width 0.5), torch's global generator."""
        u = torch.rand(batch, self.action_dim, device=self.action_center.device) * 2 - 1
        if width != 1.0:
            u = u * width
        return self.action_center + self.action_scale * u

    def clip(self, actions: Tensor) -> Tensor:
        """Actions clipped into the bounds, per dimension."""
        low, high = self.bounds()
        return torch.maximum(torch.minimum(actions, high), low)

    def rank(self, actions: Tensor) -> Tensor:
        """(B, action_dim) actions -> (B, slate_size) int64 item ids."""
        raise NotImplementedError


def _table_bounds(items: Tensor, repeat: int = 1) -> tuple[Tensor, Tensor]:
    lo, hi = items.min(dim=0).values, items.max(dim=0).values
    return ((hi + lo) / 2).repeat(repeat), ((hi - lo) / 2).repeat(repeat)


class TopK(Ranker):
    """Slate = the k items with the highest e_i . a (bounds: the item table's range per dim)."""

    kind = "topk"
    items: Tensor

    def __init__(self, items: Tensor, slate_size: int = 10) -> None:
        super().__init__(*_table_bounds(items), slate_size)
        self.register_buffer("items", items.detach().clone().float())

    @torch.no_grad()
    def rank(self, actions: Tensor) -> Tensor:
        return (actions @ self.items.T).topk(self.slate_size, dim=1).indices


class KArgmax(Ranker):
    """Slot j = argmax_i e_i . a_j with a = (a_1..a_k) (bounds: the table's range, per slot)."""

    kind = "kargmax"
    items: Tensor

    def __init__(self, items: Tensor, slate_size: int = 10) -> None:
        super().__init__(*_table_bounds(items, slate_size), slate_size)
        self.register_buffer("items", items.detach().clone().float())

    @torch.no_grad()
    def rank(self, actions: Tensor) -> Tensor:
        per_slot = actions.view(actions.shape[0], self.slate_size, -1)
        return (per_slot @ self.items.T).argmax(dim=-1)


class GeMSRanker(Ranker):
    """The GeMS decoder as a ranker (frozen)."""

    kind = "gems"

    def __init__(self, gems: GeMS, action_center: Tensor, action_scale: Tensor, meta: dict[str, Any] | None = None):
        if action_center.shape != (gems.latent_dim,):
            raise ValueError(f"bounds have {action_center.shape[0]} dims, GeMS latent_dim is {gems.latent_dim}")
        super().__init__(action_center, action_scale, gems.slate_size)
        self.gems = gems.requires_grad_(False).eval()
        self.meta = dict(meta or {})

    @torch.no_grad()
    def rank(self, actions: Tensor) -> Tensor:
        return self.gems.rank(actions)

    @torch.no_grad()
    def encode(self, slates: Tensor, clicks: Tensor) -> Tensor:
        """Latent action (encoder mean) of (slate, clicks): relabels logged data for this decoder."""
        return self.gems.encode(slates, clicks)[0]


def _architecture(gems: GeMS) -> dict[str, Any]:
    return {
        "num_items": gems.num_items, "item_dim": gems.item_dim, "slate_size": gems.slate_size,
        "latent_dim": gems.latent_dim,
        "encoder_hidden": [m.out_features for m in gems.encoder if isinstance(m, nn.Linear)][:-1],
        "decoder_hidden": [m.out_features for m in gems.decoder.modules() if isinstance(m, nn.Linear)],
    }


def save_gems_ranker(path: str | os.PathLike[str], ranker: GeMSRanker) -> None:
    """Write a GeMS checkpoint atomically: state dict, bounds, architecture and metadata."""
    payload = {
        "format": GEMS_CKPT_FORMAT,
        "version": GEMS_CKPT_VERSION,
        "state_dict": {k: v.detach().cpu() for k, v in ranker.gems.state_dict().items()},
        "action_center": ranker.action_center.detach().cpu(),
        "action_scale": ranker.action_scale.detach().cpu(),
        "architecture": json.dumps(_architecture(ranker.gems)),
        "meta": json.dumps(ranker.meta),
    }
    require_finite(path, "GeMS", payload)
    save_torch(path, payload)


def load_gems_ranker(
    path: str | os.PathLike[str],
    num_items: int | None = None,
    latent_dim: int | None = None,
    device: torch.device | str = "cpu",
) -> GeMSRanker:
    """Load and validate a GeMS checkpoint; a mismatch names the field and what was expected."""
    p = Path(path)
    payload = load_checkpoint(p, GEMS_CKPT_FORMAT, GEMS_CKPT_VERSION, "GeMS checkpoint")
    for field in ("state_dict", "action_center", "action_scale", "architecture", "meta"):
        if field not in payload:
            raise ArtifactError(f"{p}: missing field {field!r}; rebuild the checkpoint")
    arch = metadata_object(payload["architecture"], p, "architecture")
    for field, expected in (("num_items", num_items), ("latent_dim", latent_dim)):
        if expected is not None and arch.get(field) != expected:
            raise ArtifactError(f"{p}: field 'architecture.{field}' is {arch.get(field)}, expected {expected}")
    center, scale = payload["action_center"], payload["action_scale"]
    for field, t in (("action_center", center), ("action_scale", scale)):
        if not isinstance(t, Tensor) or tuple(t.shape) != (arch["latent_dim"],):
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ArtifactError(f"{p}: field {field!r} has shape {shape}, expected ({arch['latent_dim']},)")
        if not torch.isfinite(t).all():
            raise ArtifactError(f"{p}: field {field!r} holds non-finite values")
    if (scale <= 0).any():
        raise ArtifactError(f"{p}: field 'action_scale' has non-positive entries")
    gems = GeMS(
        num_items=arch["num_items"], item_dim=arch["item_dim"], slate_size=arch["slate_size"],
        latent_dim=arch["latent_dim"], encoder_hidden=tuple(arch["encoder_hidden"]),
        decoder_hidden=tuple(arch["decoder_hidden"]),
    )
    try:
        gems.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ArtifactError(f"{p}: field 'state_dict' does not match the architecture ({exc})") from exc
    return GeMSRanker(gems, center, scale, metadata_object(payload["meta"], p, "meta")).to(device)
