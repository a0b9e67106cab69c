"""Device selection (``auto`` means CUDA when available, else CPU) and CPU thread counts."""

from __future__ import annotations

import functools
import os

import torch

from slate_rl.core.errors import ConfigError


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a :class:`torch.device`."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"device {name!r} is not a device name; use auto, cpu or cuda[:N]") from exc
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {name!r} is not supported; use auto, cpu or cuda[:N]")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was requested but CUDA is not available; use device=auto or cpu")
    return device


THREADS_ENV = "SLATE_RL_THREADS"
"""Environment variable giving the CPU threads of a stage when ``--threads`` is not passed."""


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a Slurm or container allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@functools.cache
def _torch_default_threads() -> int:
    """torch's own default, read once before anything changes it: the physical cores (no SMT siblings)."""
    return torch.get_num_threads()


def default_threads() -> int:
    """Threads of a stage run by hand: ``$SLATE_RL_THREADS``, else ``$OMP_NUM_THREADS``, else the cores
    this process may use (its affinity mask, without the SMT siblings torch's default leaves out).
    Snakemake jobs pass their rule's ``threads`` instead."""
    for var in (THREADS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                threads = int(value)
            except ValueError as exc:
                raise ConfigError(f"${var} must be a positive integer, got {value!r}; unset it or fix it") from exc
            if threads < 1:
                raise ConfigError(f"${var} must be a positive integer, got {value!r}; unset it or fix it")
            return threads
    return max(1, min(available_cpus(), _torch_default_threads()))


def set_threads(threads: int | None = None) -> int:
    """Make this process compute with ``threads`` CPU threads (``None``: :func:`default_threads`).

    Sets torch's intra-op pool and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (inherited by worker
    processes). A job running more OpenMP threads than the cores it was given does not just share
    them: the threads spin waiting for each other, which measured several times slower than one
    thread per core (``slate-rl bench threads``). Returns the count set.
    """
    n = default_threads() if threads is None else threads
    if n < 1:
        raise ConfigError(f"threads must be >= 1, got {n}")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    torch.set_num_threads(n)
    return n
