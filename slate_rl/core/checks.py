"""Checks of the artifacts written and read: no NaN or infinite trained weight, metadata JSON of the right shape."""

from __future__ import annotations

import json
import math
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


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is not a finite number")
    return value


def metadata_object(raw: Any, path: str | os.PathLike[str], field: str) -> dict[str, Any]:
    """The JSON object stored as ``field`` of ``path`` (text or UTF-8 bytes): strict JSON with finite numbers only
    (``1e999``, ``NaN`` are refused), a mapping at the top; anything else is one :class:`ArtifactError` naming the
    file and the field."""
    try:
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8")
        if not isinstance(raw, str):
            raise ValueError(f"expected JSON text, found {type(raw).__name__}")
        value = json.loads(raw, parse_float=_finite_float, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ArtifactError(f"{path}: field {field!r} is not valid JSON metadata ({exc}); rebuild the file") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: field {field!r} is a JSON {type(value).__name__}, expected a JSON object; "
                            "rebuild the file")
    return value
