"""Atomic artifact IO and content hashes.

Every artifact is written to a temporary file in the destination directory and renamed at
the end, so a killed stage never leaves an output that looks complete.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slate_rl.core.errors import ArtifactError, ConfigError

_TEMP_MARK = ".tmp"


def _host() -> str:
    """This machine's name as it goes into temporary names (letters, digits, ``_`` and ``-``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _temp_prefix(final: Path) -> str:
    """The start of this process's temporary names for ``final``: ``.{name}.{host}.{pid}.``."""
    return f".{final.name}.{_host()}.{os.getpid()}."


def _temp_owner(final: Path, tmp: Path) -> tuple[str, int] | None:
    """The (host, pid) of the writer that created the temporary file ``tmp`` of ``final``, or None when
    ``tmp`` is not one of :func:`atomic_path`'s temporary names of ``final``."""
    pattern = (rf"\.{re.escape(final.name)}\.([A-Za-z0-9_-]+)\.([0-9]+)\.[A-Za-z0-9_]+"
               rf"{re.escape(_TEMP_MARK)}{re.escape(final.suffix)}")
    found = re.fullmatch(pattern, tmp.name)
    return (found.group(1), int(found.group(2))) if found else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # another user's process, or a pid the system cannot check: assume alive
    return True


def temp_files(path: str | os.PathLike[str]) -> list[Path]:
    """The temporary files of ``path``'s writers that exist now (live or killed ones)."""
    final = Path(path)
    pattern = f".{glob.escape(final.name)}.*{_TEMP_MARK}{glob.escape(final.suffix)}"
    return sorted(p for p in final.parent.glob(pattern) if _temp_owner(final, p) is not None)


def remove_stale_temp_files(path: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed writers of ``path`` left behind; return them.

    A temporary name carries its writer's host and process id (:func:`atomic_path`): only the files
    of this host's processes that no longer exist are removed, so a writer running beside this one
    (another job with the same output) keeps its file and finishes its write.
    """
    final, host = Path(path), _host()
    removed = []
    for tmp in temp_files(final):
        owner = _temp_owner(final, tmp)
        if owner is not None and owner[0] == host and not _alive(owner[1]) and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _create_temp(final: Path) -> Path:
    """Create a new, empty temporary file beside ``final`` and return its path.

    The name is unique to this writer (host, process id, random token); the file is created with
    ``O_CREAT | O_EXCL`` (``tempfile.mkstemp``), so whatever already sits at a name (a symlink, another
    writer's file) is never opened or written through.
    """
    fd, name = tempfile.mkstemp(prefix=_temp_prefix(final), suffix=_TEMP_MARK + final.suffix, dir=final.parent)
    os.close(fd)
    return Path(name)


def _megabytes(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _disk_full(exc: BaseException, directory: Path) -> bool:
    """Whether ``exc`` says that the file system ran out of space.

    An ``OSError`` ENOSPC anywhere in the chain (Python writers, and ``torch.save`` into a file
    object, which re-raises it as a RuntimeError); ``torch.save`` onto a path only says
    "unexpected pos" from its C++ writer, so there the file system's free space decides.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, RuntimeError) and ("unexpected pos" in str(exc) or "PytorchStreamWriter" in str(exc)):
        try:
            return shutil.disk_usage(directory).free < (1 << 20)
        except OSError:
            return False
    return False


def _disk_full_error(final: Path, tmp: Path | None, size_hint: int | None) -> ArtifactError:
    written = tmp.stat().st_size if tmp is not None and tmp.is_file() else 0
    try:
        free = shutil.disk_usage(final.parent).free
    except OSError:
        free = 0
    need = f"up to about {_megabytes(size_hint)}" if size_hint else f"more than the {_megabytes(written)} written"
    return ArtifactError(
        f"{final}: no space left on the device while writing it ({_megabytes(written)} written, "
        f"{_megabytes(free)} free in {final.parent}); the file needs {need}: free some space (or move the "
        "data, logs and results folders to a larger disk) and rerun"
    )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], size_hint: int | None = None) -> Iterator[Path]:
    """Yield a new temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file is this writer's own (created empty with a unique name, see
    :func:`_create_temp`), so writers of the same ``path`` running at once never touch each other's
    file: the file at ``path`` is always one writer's complete content. The temporary name keeps the
    final suffix (``.npz``, ``.json``), so writers that append a suffix when it is missing
    (``np.savez``) write exactly where they are told. Writers that record their file's name must
    write into an open file instead (:func:`save_torch`). A full disk is one :class:`ArtifactError`
    naming the file and the space (``size_hint``: the expected size in bytes, when the writer knows
    it); nothing partial is left behind.
    """
    final = Path(path)
    tmp: Path | None = None
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(final)
        tmp = _create_temp(final)
    except OSError as exc:
        if _disk_full(exc, final.parent):
            raise _disk_full_error(final, tmp, size_hint) from exc
        raise
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, final)
    except (OSError, RuntimeError) as exc:
        if _disk_full(exc, final.parent):
            raise _disk_full_error(final, tmp, size_hint) from exc
        raise
    finally:
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()


def _canonical(obj: Any) -> Any:
    """A copy of ``obj``'s containers in which every string is interned and no dict, list or tuple is shared.

    Pickle writes an object seen before as a back-reference: equal strings that happen to be one object
    (a key written by the code, ``"step"``) or two (the same key read back from a checkpoint) give
    different bytes. With every string interned and every container new, the bytes depend on the
    values alone: a resumed run writes the checkpoint bytes of an uninterrupted one.
    """
    if isinstance(obj, str):
        return sys.intern(str(obj))
    if type(obj) in (dict, collections.OrderedDict):
        out = type(obj)((_canonical(k), _canonical(v)) for k, v in obj.items())
        for name, value in vars(obj).items() if type(obj) is collections.OrderedDict else ():
            setattr(out, name, _canonical(value))  # a state_dict's _metadata (module versions)
        return out
    if type(obj) in (list, tuple):
        return type(obj)(_canonical(v) for v in obj)
    return obj


def save_torch(path: str | os.PathLike[str], payload: Any) -> None:
    """``torch.save`` ``payload`` to ``path`` atomically; the same values give the same bytes.

    torch names the records of its zip archive after the file it is given by name (the temporary
    name, unique per writer); written into an open file they are always named ``archive/``. The
    payload is pickled in its canonical form (:func:`_canonical`).
    """
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(_canonical(payload), fh)


def copy_file(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Copy ``source`` onto ``dest`` atomically."""
    with atomic_path(dest, size_hint=os.path.getsize(source)) as tmp:
        shutil.copyfile(source, tmp)


def write_json(path: str | os.PathLike[str], obj: Mapping[str, Any]) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    with atomic_path(path, size_hint=len(text.encode())) as tmp:
        tmp.write_text(text)


def timings_path(path: str | os.PathLike[str]) -> Path:
    """Where the timings of a result go: ``x.json`` -> ``x.timings.json`` (kept apart so that the
    result itself is the same bytes on every run with the same seed)."""
    p = Path(path)
    return p.with_name(f"{p.stem}.timings.json")


def write_timings(path: str | os.PathLike[str], **timings: float | str) -> None:
    """Write wall-clock figures (seconds, throughput, device) beside the result ``path``."""
    write_json(timings_path(path), timings)


def save_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], compress: bool = True) -> None:
    """Save arrays to an ``.npz`` file atomically (compressed by default)."""
    with atomic_path(path, size_hint=sum(int(np.asarray(a).nbytes) for a in arrays.values())) as tmp, \
            open(tmp, "wb") as fh:
        if compress:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
        else:
            np.savez(fh, **arrays)  # type: ignore[arg-type]


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save one array to ``.npy`` atomically (no pickle)."""
    with atomic_path(path, size_hint=int(array.nbytes)) as tmp, open(tmp, "wb") as fh:
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
    """``torch.load`` with ``weights_only``; an unreadable or foreign file is one clear error.

    A file that holds Python objects besides tensors and plain data is refused with our own
    message: torch's advice to retry with ``weights_only=False`` (which runs whatever code
    the file carries) is not passed on.
    """
    import pickle

    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's text advises weights_only=False: never passed on
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found:
            raise ArtifactError(f"{path}: this {what} holds Python objects that slate_rl never writes (it holds "
                                f"{found.group(1)}); loading it could run code, so it is refused: delete it and "
                                "rebuild it with slate_rl") from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", str(exc), re.S)
        reason = detail.group(1) if detail else "not a torch checkpoint"
        raise ArtifactError(f"{path}: unreadable {what} ({reason}); delete it and rebuild it") from None
    except Exception as exc:  # torch raises several types for truncated or foreign files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ArtifactError(f"{path}: unreadable {what} ({type(exc).__name__}: {first}); delete it and rebuild it"
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


def save_resume(path: str | os.PathLike[str], state: Mapping[str, Any], fingerprint: str,
                generator: Any = None) -> None:
    """Write a training loop's resume checkpoint atomically: the loop's ``state`` (tensors and plain data,
    readable with ``weights_only``), the run's ``fingerprint`` and torch's RNG state (global CPU and CUDA
    generators, and the loop's own ``torch.Generator`` if any)."""
    from slate_rl.core.rng import torch_rng_state

    payload: dict[str, Any] = {**state, **torch_rng_state(), "fingerprint": fingerprint}
    if generator is not None:
        payload["sample_rng"] = generator.get_state()
    save_torch(path, payload)


def curve_tensor(curve: Sequence[Sequence[float]] | None) -> Any:
    """A learning curve (``[step, value]`` pairs) as the float64 tensor a resume checkpoint holds."""
    import torch

    return torch.tensor(list(curve or []), dtype=torch.float64).reshape(-1, 2)


def curve_from_tensor(tensor: Any) -> list[list[Any]]:
    """The learning curve :func:`curve_tensor` stored: integer steps (as the loop wrote them, so that a
    resumed run's results are the same JSON as an uninterrupted run's) and float values."""
    return [[int(step), float(value)] for step, value in tensor.tolist()]


def load_resume(path: str | os.PathLike[str], fingerprint: str, restore: Callable[[dict[str, Any]], str | None],
                generator: Any = None) -> str | None:
    """Resume a training loop from the checkpoint :func:`save_resume` wrote at ``path``.

    ``restore(payload)`` loads the loop's own state, or returns why it refuses the checkpoint (before
    changing anything). Returns None once resumed (RNG state restored too), else the reason why not: a
    checkpoint written under another ``fingerprint`` or refused by ``restore``. A checkpoint of this run
    that does not fit (missing fields, other shapes) is one :class:`ArtifactError`.
    """
    from slate_rl.core.rng import set_torch_rng_state

    payload = read_resume_checkpoint(path)
    if payload.get("fingerprint", "") != fingerprint:
        return "written by a run with other inputs or settings"
    try:
        refused = restore(payload)
        if refused is not None:
            return refused
        set_torch_rng_state(payload)
        if generator is not None:
            generator.set_state(payload["sample_rng"])
    except (KeyError, RuntimeError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: resume checkpoint does not fit this run ({exc}); delete it and rerun") from exc
    return None


def check_seed_group(count: int, seeds: Sequence[int], paths: Sequence[Any], fingerprints: Sequence[str] | None,
                     what: str) -> None:
    """ConfigError unless ``count`` models (``what``: their kind) come with as many distinct seeds, resume paths
    and (if given) fingerprints: the arguments of a multi-seed training loop."""
    if count == 0 or len(seeds) != count or len(paths) != count or (fingerprints is not None
                                                                      and len(fingerprints) != count):
        raise ConfigError(f"multi-seed training needs one seed, one last path and one fingerprint per {what} "
                          f"({count} {what}s, {len(seeds)} seeds, {len(paths)} paths)")
    if len(set(seeds)) != count:
        raise ConfigError(f"multi-seed training needs distinct seeds, got {list(seeds)}")


def resume_group(seeds: Sequence[int], paths: Sequence[str | os.PathLike[str]], models: Sequence[Any],
                 load: Callable[[int], str | None], steps: Callable[[], Sequence[int]]) -> bool:
    """Resume a group of seeds trained together, each from its checkpoint ``paths[i]`` (``load(i)`` resumes seed
    ``i`` into ``models[i]`` and the loop's state, and returns why not, or None; ``steps()`` are then the seeds'
    steps). True when the group resumed or had nothing to resume; False when it must start over (a seed without
    a checkpoint, one refused, or seeds at different steps): then it says why and has put every model back in
    its initial state, and the caller starts its loop state afresh."""
    if not any(Path(p).is_file() for p in paths):
        return True
    initial = [copy.deepcopy(m.state_dict()) for m in models]
    reasons = [load(i) if Path(p).is_file() else "no checkpoint" for i, p in enumerate(paths)]
    why = "; ".join(f"seed {s}: {r}" for s, r in zip(seeds, reasons, strict=True) if r is not None)
    at = sorted(set(steps()))
    if not why and len(at) == 1:
        return True
    if len(paths) == 1:  # one seed: the message of a one-run loop
        print(f"{paths[0]}: {reasons[0]}; starting over")
    else:
        print(f"multi-seed resume refused ({why or f'seeds at different steps {at}'}); every seed starts over")
    for m, start in zip(models, initial, strict=True):
        m.load_state_dict(start)
    return False


def fingerprint(settings: Any) -> str:
    """A short hash of JSON-able settings (what a resume checkpoint must have been written under)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
