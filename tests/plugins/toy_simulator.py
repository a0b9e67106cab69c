"""A plugin: a second simulator, defined in this one file and nowhere in the package. The pipeline runs on anything
that implements :class:`slate_rl.sim.protocol.Simulator` and whose config dataclass names it.

The toy: a user is a non-negative unit preference vector; an item's relevance is a sigmoid of its score
``e . u`` (over the table's largest norm); slot ``r`` is examined with probability ``0.85 ** r``; after every
step the preference drifts towards the mean of the clicked items. No boredom, no topics beyond the table's.
Every random number is keyed per user (:mod:`slate_rl.core.rng`), so a session does not depend on its batch.
Used as ``environments: {toy: {simulator: "toy_simulator:ToyConfig"}}`` with this directory on ``PYTHONPATH``
(``tests/test_toy_simulator.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from slate_rl.core import rng
from slate_rl.core.errors import ConfigError, SlateRLError
from slate_rl.sim.core import StepResult

STREAM_USER = 101
STREAM_CLICKS = 102


@dataclass(frozen=True)
class ToyConfig:
    """The toy's parameters (the pipeline reads the sizes and the item-table kind)."""

    SIMULATOR: ClassVar[str] = "toy_simulator:ToySimulator"

    embeddings: str = "diffuse"
    """Item-table kind."""
    num_items: int = 1000
    """Catalogue size."""
    slate_size: int = 10
    """Items per slate."""
    num_topics: int = 10
    """Topics of the item table."""
    topic_size: int = 2
    """Dimensions per topic."""
    episode_length: int = 100
    """Steps per session."""
    slope: float = 20.0
    """Steepness of the relevance sigmoid."""
    offset: float = 0.75
    """Score at which relevance is 0.5."""
    drift: float = 0.1
    """Weight of the clicked items' mean in the next preference."""

    def __post_init__(self) -> None:
        if not 1 <= self.slate_size <= self.num_items:
            raise ConfigError(f"environments.<toy>.slate_size must be in [1, num_items], got {self.slate_size}")

    @property
    def embedding_dim(self) -> int:
        return self.num_topics * self.topic_size


@dataclass
class ToyState:
    key: Tensor
    """(B,) user keys."""
    t: Tensor
    """(B,) steps taken."""
    user: Tensor
    """(B, D) preference vectors."""


class ToySimulator:
    def __init__(self, config: ToyConfig, item_embeddings: Tensor, device: torch.device) -> None:
        self.config, self.device = config, device
        self.items = item_embeddings.to(device=device, dtype=torch.float32)
        self.max_norm = float(self.items.norm(dim=1).max())
        self.examination = 0.85 ** torch.arange(config.slate_size, dtype=torch.float32, device=device)

    def _relevance(self, user: Tensor, slate: Tensor) -> Tensor:
        score = (self.items[slate] * user[:, None, :]).sum(-1) / self.max_norm
        return torch.sigmoid(self.config.slope * (score - self.config.offset))

    def _show(self, state: ToyState, slate: Tensor) -> tuple[ToyState, StepResult]:
        c = self.config
        oracle = slate < 0
        if bool(oracle.any()):
            best = (state.user @ self.items.T).topk(c.slate_size, dim=1).indices
            slate = torch.where(oracle, best, slate)
        rel = self._relevance(state.user, slate)
        prob = rel * self.examination
        clicks = rng.uniform(state.key, STREAM_CLICKS, state.t, c.slate_size) < prob
        n = clicks.sum(1, keepdim=True)
        clicked = (self.items[slate] * clicks[..., None]).sum(1) / n.clamp(min=1)
        user = torch.where(n > 0, (1 - c.drift) * state.user + c.drift * clicked, state.user)
        user = user / user.norm(dim=1, keepdim=True)
        result = StepResult(slate=slate, clicks=clicks, reward=n[:, 0].float(), truncated=state.t >= c.episode_length,
                            user_effective=state.user, relevance=rel, click_probability=prob)
        return ToyState(state.key, state.t, user), result

    def reset(self, key: Tensor) -> tuple[ToyState, StepResult]:
        key = key.to(self.device, torch.int64)
        user = rng.normal(key, STREAM_USER, 0, self.config.embedding_dim).abs()
        state = ToyState(key, torch.zeros_like(key), user / user.norm(dim=1, keepdim=True))
        slate = torch.arange(self.config.slate_size, device=self.device).expand(key.shape[0], -1)
        state, result = self._show(state, slate)
        result.reward = torch.zeros_like(result.reward)
        return state, result

    def step(self, state: ToyState, slate: Tensor, validate: bool = True) -> tuple[ToyState, StepResult]:
        slate = slate.to(self.device, torch.int64)
        if validate and (slate.ndim != 2 or slate.shape[1] != self.config.slate_size
                         or int(slate.min()) < -1 or int(slate.max()) >= self.config.num_items):
            raise SlateRLError(f"slate of shape {tuple(slate.shape)} is not (batch, {self.config.slate_size}) "
                               f"of ids in -1..{self.config.num_items - 1}")
        return self._show(ToyState(state.key, state.t + 1, state.user), slate)
