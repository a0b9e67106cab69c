"""The check every trained artifact passes before it is written: no NaN or infinite weight."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from slate_rl.core.errors import ArtifactError


def first_non_finite(values: Any, where: str = "") -> str | None:
    """The key path of the first floating tensor/array holding NaN or +-inf in ``values`` (nested mappings of
    tensors and arrays), or ``None`` when every one is finite."""
    if isinstance(values, Mapping):
        for key, value in values.items():
            found = first_non_finite(value, f"{where}.{key}" if where else str(key))
            if found is not None:
                return found
        return None
    import torch

    if isinstance(values, torch.Tensor):
        if values.is_floating_point() and not bool(torch.isfinite(values).all()):
            return where or "<tensor>"
    elif isinstance(values, np.ndarray) and np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        return where or "<array>"
    return None


def require_finite(path: str | os.PathLike[str], what: str, values: Any) -> None:
    """Refuse to write ``path`` when the trained ``what`` has a non-finite weight: one :class:`ArtifactError`
    naming the entry; called before the atomic write, so nothing is left at ``path``."""
    found = first_non_finite(values)
    if found is not None:
        raise ArtifactError(f"{path}: the trained {what} has NaN or infinite values in {found!r} (training "
                            "diverged: lower the learning rates or check the inputs); nothing was written")
