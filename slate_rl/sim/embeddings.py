"""Item-embedding tables: generation from a seed, loading from .npy/.pt, validation.

A table is ``(num_items, num_topics * topic_size)`` float32 with rows of L2 norm 1. The
generation recipe is the spec's: a topic mixture w ~ U(0,1)^T normalised to sum 1, each
topic block |clip(0.4 N(0, I), -1, 1)| * w_t, optionally every coordinate raised to a power, then
L2 normalisation.

The published tables of *both* kinds have the statistics of the recipe without a power (spec,
revised 2026-11-28): the power (1.5 in a comment of the published generator, and in an earlier
version of the spec for focused tables) is an option, off by default. Without it the two kinds
share one recipe, so each kind has its own default seed.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from slate_rl.core.errors import ArtifactError
from slate_rl.core.io import _torch_load

DEFAULT_EMBEDDINGS_SEEDS: dict[str, int] = {"focused": 2023, "diffuse": 2024}
"""Seed of each kind's generated table when no table is given (config.yaml's defaults)."""

EARLIER_FOCUSED_POWER = 1.5
"""Exponent of the focused recipe in the published generator's comment and the earlier spec
(``embeddings.power.focused: 1.5`` restores it; the short-term oracle on focused_topdown then
falls from ~103 to ~71)."""


def default_embeddings_seed(kind: str) -> int:
    """The default generation seed of a table kind (focused or diffuse)."""
    if kind not in DEFAULT_EMBEDDINGS_SEEDS:
        raise ArtifactError(f"unknown embedding kind {kind!r}; use focused or diffuse")
    return DEFAULT_EMBEDDINGS_SEEDS[kind]


def generate_item_embeddings(
    kind: Literal["focused", "diffuse"], seed: int | None = None, num_items: int = 1000, num_topics: int = 10,
    topic_size: int = 2, power: float = 1.0,
) -> np.ndarray:
    """Generate an item table from a seed (default: the kind's) with NumPy's PCG64 (platform independent).

    ``power`` raises every coordinate before normalisation (1.0: the published tables' statistics).
    """
    if kind not in ("focused", "diffuse"):
        raise ArtifactError(f"unknown embedding kind {kind!r}; use focused or diffuse")
    if not (math.isfinite(power) and power > 0):
        raise ArtifactError(f"embedding power must be a positive number, got {power}")
    rng = np.random.default_rng(default_embeddings_seed(kind) if seed is None else seed)
    w = rng.uniform(0.0, 1.0, size=(num_items, num_topics))
    w /= w.sum(axis=1, keepdims=True)
    blocks = np.abs(np.clip(0.4 * rng.standard_normal((num_items, num_topics, topic_size)), -1.0, 1.0))
    emb = (blocks * w[:, :, None]).reshape(num_items, num_topics * topic_size)
    if power != 1.0:
        emb = emb**power
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb.astype(np.float32)


def validate_item_embeddings(
    table: np.ndarray, num_items: int, dim: int, source: str, nonnegative: bool = True
) -> np.ndarray:
    """Check shape and values of a table; return it as float32.

    ``nonnegative`` holds for the simulator's tables (TopicRec topic blocks are absolute
    values); learned tables such as MF embeddings may be negative.
    """
    if table.ndim != 2 or table.shape != (num_items, dim):
        raise ArtifactError(
            f"{source}: item embeddings have shape {tuple(table.shape)}, expected ({num_items}, {dim}) "
            "(num_items x num_topics*topic_size); pass a table made for this environment"
        )
    if not np.issubdtype(table.dtype, np.floating):
        raise ArtifactError(f"{source}: item embeddings have dtype {table.dtype}, expected a float array")
    if not np.isfinite(table).all():
        raise ArtifactError(f"{source}: item embeddings contain NaN or infinite values")
    if nonnegative and (table < 0).any():
        raise ArtifactError(f"{source}: item embeddings contain negative values; TopicRec tables are non-negative")
    if (np.linalg.norm(table, axis=1) == 0).any():
        raise ArtifactError(f"{source}: some item embeddings are all zeros")
    return table.astype(np.float32, copy=False)


def load_item_embeddings(
    path: str | os.PathLike[str], num_items: int = 1000, dim: int = 20, nonnegative: bool = True
) -> np.ndarray:
    """Load a table from ``.npy`` (no pickle) or a ``.pt`` tensor (weights_only) and validate it."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p}: embeddings file not found")
    try:
        if p.suffix == ".pt":
            try:
                obj = torch.load(p, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                _torch_load(p, "item-embedding table")  # raises its refusal: torch's advice is never passed on
                raise
            if not isinstance(obj, torch.Tensor):
                raise ArtifactError(f"{p}: expected a saved tensor, found {type(obj).__name__}")
            table = obj.detach().numpy()
        else:
            table = np.load(p, allow_pickle=False)
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"{p}: cannot read item embeddings ({exc}); use a .npy array or a .pt tensor") from exc
    return validate_item_embeddings(np.asarray(table), num_items, dim, str(p), nonnegative)


def main_topics(table: torch.Tensor, num_topics: int, topic_size: int) -> torch.Tensor:
    """Main topic of each item: argmax over topics of the block norm."""
    blocks = table.reshape(table.shape[0], num_topics, topic_size)
    return blocks.norm(dim=-1).argmax(dim=-1)
