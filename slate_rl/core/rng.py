"""Counter-based random numbers keyed per user.

Why not ``torch.Generator``: a generator's draws depend on how many users share a batch, so
user 17 of a test seed would see different clicks with B = 64 than with B = 1024. Here every
random number is a pure function ``hash(key, stream, step, index)`` (SplitMix64), so a user's
whole session is fixed by its key alone: the same on any batch size, in a single-user
``gymnasium.Env`` or a batched ``VectorEnv``, and across resumed runs. Test users drawn from a
fixed seed are therefore identical for every agent, whatever its batch size.

All arithmetic is on int64 tensors with wrap-around multiplication (checked against a pure
Python reference in the tests); logical right shifts are emulated with a mask.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1


def _signed(x: int) -> int:
    x &= _MASK64
    return x - (1 << 64) if x >= (1 << 63) else x


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_M1 = _signed(0xBF58476D1CE4E5B9)
_M2 = _signed(0x94D049BB133111EB)
# Layout of the 64-bit counter: stream (16 bits) | step (32 bits) | index within a step (16 bits).
_STEP_SHIFT = 16
_STREAM_SHIFT = 48


def _srl(x: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 values."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix64(x: Tensor) -> Tensor:
    """SplitMix64 finaliser applied to ``x + golden``: a bijective 64-bit hash."""
    z = x + _GOLDEN
    z = (z ^ _srl(z, 30)) * _M1
    z = (z ^ _srl(z, 27)) * _M2
    return z ^ _srl(z, 31)


def mix64_int(x: int) -> int:
    """Pure-Python reference of :func:`mix64` on one value (returns a signed int64)."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return _signed(z ^ (z >> 31))


def derive_key(seed: int | Tensor, index: Tensor | int, device: torch.device | str = "cpu") -> Tensor:
    """Key of item ``index`` (a user, a session) under ``seed``: ``mix(mix(seed) ^ index)``.

    ``seed`` and ``index`` broadcast (scalars or int64 tensors).
    """
    idx = torch.as_tensor(index, dtype=torch.int64, device=device)
    if isinstance(seed, int):
        base: Tensor | int = mix64_int(_signed(seed))
    else:
        base = mix64(seed.to(device=idx.device, dtype=torch.int64))
    return mix64(idx ^ base)


def subkey(key: Tensor, tag: int) -> Tensor:
    """An independent key derived from ``key`` (e.g. a policy's key from a user's key)."""
    return mix64(key ^ mix64_int(tag))


def random_bits(key: Tensor, stream: int, step: Tensor | int, n: int) -> Tensor:
    """``(B, n)`` random int64 values for keys ``(B,)`` at ``step`` (scalar or ``(B,)``)."""
    step_t = torch.as_tensor(step, dtype=torch.int64, device=key.device)
    if step_t.ndim == 1:
        step_t = step_t[:, None]
    j = torch.arange(n, dtype=torch.int64, device=key.device)
    counter = (stream << _STREAM_SHIFT) + (step_t << _STEP_SHIFT) + j
    return mix64(key[:, None] ^ mix64(counter))


def uniform(key: Tensor, stream: int, step: Tensor | int, n: int) -> Tensor:
    """``(B, n)`` float32 uniforms in [0, 1) with 24 bits of resolution."""
    bits = random_bits(key, stream, step, n)
    return _srl(bits, 40).to(torch.float32) * (1.0 / (1 << 24))


def randint(key: Tensor, stream: int, step: Tensor | int, n: int, high: Tensor | int) -> Tensor:
    """``(B, n)`` int64 uniform in [0, high) (53-bit resolution, bias below 1e-12 for high <= 1e4)."""
    bits = random_bits(key, stream, step, n)
    u = _srl(bits, 11).to(torch.float64) * (1.0 / (1 << 53))
    high_t = torch.as_tensor(high, device=key.device)
    return (u * high_t).to(torch.int64)


def normal(key: Tensor, stream: int, step: Tensor | int, n: int) -> Tensor:
    """``(B, n)`` float32 standard normals (Box-Muller on 53-bit uniforms)."""
    m = (n + 1) // 2
    bits = random_bits(key, stream, step, 2 * m)
    u = _srl(bits, 11).to(torch.float64) * (1.0 / (1 << 53))
    u1 = 1.0 - u[:, :m]  # in (0, 1]
    u2 = u[:, m:]
    r = torch.sqrt(-2.0 * torch.log(u1))
    z = torch.cat([r * torch.cos(2 * torch.pi * u2), r * torch.sin(2 * torch.pi * u2)], dim=1)
    return z[:, :n].to(torch.float32)


def torch_rng_state() -> dict[str, Tensor | list[Tensor]]:
    """torch's global generators (CPU, and every CUDA device when there is one), for resume checkpoints."""
    state: dict[str, Tensor | list[Tensor]] = {"torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def set_torch_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`torch_rng_state` captured."""
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def cuda_devices() -> list[int]:
    """Every CUDA device (``torch.random.fork_rng(devices=...)``); empty on CPU."""
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
