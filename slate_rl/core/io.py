"""Atomic artifact IO and content hashes.

Every artifact is written to a temporary file in the destination directory and renamed at
the end, so a killed stage never leaves an output that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from slate_rl.core.errors import ArtifactError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary name keeps the final suffix (``.npz``, ``.json``), so writers that append a
    suffix when it is missing (``np.savez``) write exactly where they are told.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{final.suffix}", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; artifacts get the usual permissions
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike[str], obj: Mapping[str, Any]) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], compress: bool = True) -> None:
    """Save arrays to an ``.npz`` file atomically (compressed by default)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        if compress:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
        else:
            np.savez(fh, **arrays)  # type: ignore[arg-type]


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save one array to ``.npy`` atomically (no pickle)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def load_npz(path: str | os.PathLike[str], required: Mapping[str, tuple[int, ...] | None]) -> dict[str, np.ndarray]:
    """Load an ``.npz`` without pickle and check that the required keys are present.

    ``required`` maps key -> expected number of dimensions as a tuple of ``ndim`` values or
    ``None`` to skip the check.
    """
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p}: file not found; build it first (e.g. with snakemake {p})")
    try:
        with np.load(p, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # zipfile/format errors: one message, not a traceback
        raise ArtifactError(f"{p}: not a readable .npz file ({exc}); delete it and rebuild it") from exc
    for key, ndims in required.items():
        if key not in arrays:
            raise ArtifactError(
                f"{p}: missing array {key!r}; the file is corrupted or from another version, rebuild it"
            )
        if ndims is not None and arrays[key].ndim not in ndims:
            raise ArtifactError(
                f"{p}: array {key!r} has {arrays[key].ndim} dimensions, expected {' or '.join(map(str, ndims))}"
            )
    return arrays


def file_sha256(path: str | os.PathLike[str], length: int = 16) -> str:
    """Hex SHA-256 of a file's bytes (first ``length`` characters), used to tie results to inputs."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def _torch_load(path: Path, what: str) -> dict[str, Any]:
    """``torch.load`` with ``weights_only``; an unreadable or foreign file is one clear error."""
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise ArtifactError(f"{path}: unreadable {what} ({type(exc).__name__}: {exc}); delete it and rebuild it"
                            ) from exc
    if not isinstance(payload, dict):
        raise ArtifactError(f"{path}: not a {what}; delete it and rebuild it")
    return payload


def load_checkpoint(path: str | os.PathLike[str], fmt: str, version: int, what: str) -> dict[str, Any]:
    """Load one of our checkpoints (tensors + JSON strings, ``weights_only``) and check its
    ``format`` and ``version`` fields; every failure names the file and the field."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p}: {what} not found; build it with snakemake {p}")
    payload = _torch_load(p, what)
    if payload.get("format") != fmt:
        raise ArtifactError(f"{p}: field 'format' is not {fmt!r}; this is not a {what}")
    if payload.get("version") != version:
        raise ArtifactError(f"{p}: field 'version' is {payload.get('version')!r}, expected {version}")
    return payload


def read_resume_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A training loop's resume checkpoint (``weights_only``); unreadable -> one clear error."""
    return _torch_load(Path(path), "resume checkpoint")


def fingerprint(settings: Any) -> str:
    """A short hash of JSON-able settings (what a resume checkpoint must have been written under)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
