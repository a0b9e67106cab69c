"""Batched reference policies: uniformly random slates, the short-term oracle, and the
epsilon-greedy oracle that logs the GeMS/MF training data.

A policy maps ``(key, t, observation)`` of B users to slates ``(B, k)``; ``-1`` marks a
slot the simulator fills with the short-term oracle's item of the same rank. Randomness is
keyed per user (``subkey(user_key, seed)``), so a policy's choices for a user do not depend
on the batch it is evaluated in.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from slate_rl.core import rng
from slate_rl.core.artifacts import REFERENCE_POLICIES
from slate_rl.core.errors import ConfigError

STREAM_SLATE_ITEMS = 11
STREAM_SLATE_ORDER = 12
STREAM_EPSILON = 13

POLICY_NAMES = REFERENCE_POLICIES


class SlatePolicy(Protocol):
    """A batched slate policy."""

    def __call__(self, key: Tensor, t: Tensor, slate: Tensor, clicks: Tensor) -> Tensor:
        """Slates (B, k) for users with policy keys ``key`` (B,) about to take step ``t + 1``,
        given the last observation ``slate``/``clicks`` (B, k)."""
        ...


def random_slates(key: Tensor, step: Tensor | int, num_items: int, k: int) -> Tensor:
    """Uniformly random slates of k distinct items in uniformly random order.

    Floyd's algorithm draws a uniform k-subset with k random integers (no (B, num_items)
    buffer); a random permutation of the k positions then makes the order uniform too.
    """
    draws = rng.randint(key, STREAM_SLATE_ITEMS, step, k, torch.arange(num_items - k + 1, num_items + 1,
                                                                          device=key.device))
    chosen = torch.empty_like(draws)
    for i in range(k):
        j = num_items - k + i  # draws[:, i] is uniform in [0, j]
        cand = draws[:, i]
        if i > 0:
            taken = (chosen[:, :i] == cand[:, None]).any(dim=1)
            cand = torch.where(taken, torch.full_like(cand, j), cand)
        chosen[:, i] = cand
    order = rng.uniform(key, STREAM_SLATE_ORDER, step, k).argsort(dim=1)
    return chosen.gather(1, order)


class RandomPolicy:
    """Uniformly random slates (k distinct items)."""

    def __init__(self, num_items: int, slate_size: int) -> None:
        self.num_items, self.slate_size = num_items, slate_size

    def __call__(self, key: Tensor, t: Tensor, slate: Tensor, clicks: Tensor) -> Tensor:
        return random_slates(key, t, self.num_items, self.slate_size)


class OraclePolicy:
    """The short-term oracle: every slot -1 (the simulator fills it from u~, privileged)."""

    def __init__(self, slate_size: int) -> None:
        self.slate_size = slate_size

    def __call__(self, key: Tensor, t: Tensor, slate: Tensor, clicks: Tensor) -> Tensor:
        return torch.full((key.shape[0], self.slate_size), -1, dtype=torch.int64, device=key.device)


class EpsilonGreedyOracle:
    """Each slot independently: a random item with probability epsilon (random items of a
    slate are distinct), otherwise the oracle's item of that rank (-1)."""

    def __init__(self, num_items: int, slate_size: int, epsilon: float) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ConfigError(f"epsilon must be in [0, 1], got {epsilon}")
        self.num_items, self.slate_size, self.epsilon = num_items, slate_size, epsilon

    def __call__(self, key: Tensor, t: Tensor, slate: Tensor, clicks: Tensor) -> Tensor:
        rand = random_slates(key, t, self.num_items, self.slate_size)
        explore = rng.uniform(key, STREAM_EPSILON, t, self.slate_size) < self.epsilon
        return torch.where(explore, rand, torch.full_like(rand, -1))


def make_policy(name: str, num_items: int, slate_size: int, epsilon: float = 0.5) -> SlatePolicy:
    """Reference policy by name: ``random``, ``oracle`` or ``eps-greedy``."""
    if name == "random":
        return RandomPolicy(num_items, slate_size)
    if name == "oracle":
        return OraclePolicy(slate_size)
    if name in ("eps-greedy", "epsilon-greedy"):
        return EpsilonGreedyOracle(num_items, slate_size, epsilon)
    raise ConfigError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")
