"""The sequence-method family: offline policies trained on whole sessions (Decision Transformer,
Decision Diffuser), over the same loop, guard, checkpoints and evaluation as the TD methods.

A sequence method is an :class:`~slate_rl.offline.base.OfflineAlgo` (``update(batch) -> metrics``,
``state_dict`` with optimisers and counters, actions inside the GeMS box) that additionally

* **fits the dataset's statistics** once before training (:meth:`SequenceAlgo.fit_dataset`): the
  per-timestep maximum return-to-go ``rtg_max[t] = max_e sum_{k>=t} discount^(k-t) r_{e,k}``
  (``discount`` is the method's ``return_discount``; ``rtg_max[0]`` is the best session return of
  the dataset), which each method uses to normalise its return conditioning, and whatever else
  the method needs (:meth:`SequenceAlgo.fit_states`); these are buffers, saved with the policy;
* **samples windows of sessions** (:meth:`SequenceAlgo.sample`), ``window`` consecutive steps
  from a uniformly drawn session and start ``t0`` in ``0..H-1`` (CORL's ``dt.py`` sampling:
  sessions all have the same length, so its length-weighted draw is uniform). Steps past the end
  of the session are padding (``mask`` 0), as in CORL. The batch holds, each ``(B, L, ...)``:
  ``states`` (normalised beliefs; index ``H`` is the state after the last action, later padding
  repeats it), ``slates``/``clicks`` (the observation at each step: what a ``raw`` encoder reads),
  ``actions`` (in the box, zeros on padding), ``rewards``, ``returns`` (return-to-go from each step
  with ``return_discount``), ``timesteps`` (``t0 .. t0+L-1``), ``mask`` (1 where ``t < H``, the
  steps with an action) and ``state_mask`` (1 where ``t <= H``);
* **acts with a per-user context** during the batched evaluation: ``begin(batch, target)``
  returns the context of ``batch`` users at the start of a session and ``step(context, states,
  slates, clicks, rewards)`` the actions of the current step (``rewards``: the reward each user
  got for the previous action, 0 at the first step) and the updated context. All users of one
  evaluation are at the same step (the simulator is batched over users), so a context is a
  plain dict of tensors with a leading user dimension plus the step counter.

``target`` is the method's return condition as a multiple of its normalised maximum (the
dataset's best session for the Decision Transformer, 0.9 for the Decision Diffuser's test
condition); ``None`` takes the method's configured default.

A third method of the family is one file defining a config dataclass and a ``SequenceAlgo``
subclass (``window``, ``update``, ``begin``, ``step``; ``fit_states`` if it needs more
statistics) plus its entry in :mod:`slate_rl.offline.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from slate_rl.core.errors import ArtifactError
from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.offline.base import OfflineAlgo
from slate_rl.offline.config import OfflineConfig

Context = dict[str, Any]


@dataclass(frozen=True)
class SessionSpec:
    """What a sequence method must know of the sessions: their length and the catalogue."""

    episode_length: int = 100
    """Steps per session (the timestep embedding's range and the length of ``rtg_max``)."""
    num_items: int = 1000
    """Catalogue size (the ``raw`` state encoder's item table)."""
    slate_size: int = 10
    """Items per slate."""


def returns_to_go(rewards: Tensor, discount: float) -> Tensor:
    """``G[..., t] = sum_{k>=t} discount^(k-t) r[..., k]`` along the last dimension (one matmul)."""
    h = rewards.shape[-1]
    k = torch.arange(h, device=rewards.device)
    power = (k[:, None] - k[None, :]).clamp(min=0).to(rewards.dtype)  # [k, t] = k - t
    weights = torch.where(k[:, None] >= k[None, :], torch.pow(torch.tensor(discount, dtype=rewards.dtype,
                                                                            device=rewards.device), power), 0.0)
    return rewards @ weights


class SlateClickEncoder(nn.Module):
    """The ``raw`` state of a step: a learned item table applied to its slate, concatenated with
    the clicks, per slot (``k * (item_dim + 1)`` values); no frozen encoder, no recurrence (the
    sequence model sees the history)."""

    def __init__(self, num_items: int, slate_size: int, item_dim: int) -> None:
        super().__init__()
        self.items = nn.Embedding(num_items, item_dim)
        nn.init.normal_(self.items.weight, std=0.1)
        self.out_dim = slate_size * (item_dim + 1)

    def forward(self, slates: Tensor, clicks: Tensor) -> Tensor:
        emb = self.items(slates.long())
        return torch.cat([emb, clicks.to(emb.dtype).unsqueeze(-1)], dim=-1).flatten(-2)


class SequenceAlgo(OfflineAlgo):
    """Base class of the sequence methods (see the module doc)."""

    return_discount = 1.0
    """Discount of the return-to-go the method conditions on (1: undiscounted, as DT)."""
    acts_on_states: ClassVar[bool] = False

    def __init__(self, obs_dim: int, action_center: Tensor, action_scale: Tensor, gamma: float,
                 session: SessionSpec | None = None) -> None:
        super().__init__(obs_dim, action_center, action_scale, gamma)
        self.session = session or SessionSpec()
        self.rtg_max: Tensor
        self.register_buffer("rtg_max", torch.ones(self.session.episode_length))

    @property
    def window(self) -> int:
        """Steps per training window."""
        raise NotImplementedError

    @property
    def batch_windows(self) -> int:
        """Windows per update."""
        raise NotImplementedError

    # ------------------------------------------------------------------ dataset
    def check_buffer(self, buffer: EpisodeBuffer) -> None:
        """One clear error for data a sequence method cannot train on."""
        h = buffer.horizon
        if h != self.session.episode_length:
            raise ArtifactError(
                f"the dataset holds sessions of {h} steps but the environment's sessions last "
                f"{self.session.episode_length}: {self.name} needs whole sessions; collect the dataset for this "
                "environment (slate-rl collect) or pass its session length")
        if "observations" not in buffer.data or "next_observations" not in buffer.data:
            raise ArtifactError(f"{self.name} needs the dataset's per-step states (OfflineDataset.to_buffer)")
        if buffer.size == 0:
            raise ArtifactError(f"{self.name}: the dataset holds no session")

    @torch.no_grad()
    def fit_dataset(self, buffer: EpisodeBuffer) -> None:
        """Fit the dataset statistics (``rtg_max`` and the method's own) on the whole buffer."""
        self.check_buffer(buffer)
        rewards = buffer.data["rewards"][: buffer.size].float()
        rtg = returns_to_go(rewards, self.return_discount)
        self.rtg_max.copy_(rtg.max(0).values.clamp(min=1.0))  # 0-return data (clicks never happen): scale 1
        self.fit_states(buffer)

    def fit_states(self, buffer: EpisodeBuffer) -> None:
        """Further statistics of a method (none by default)."""

    def sampler(self, buffer: EpisodeBuffer, cfg: OfflineConfig, generator: torch.Generator
                ) -> Callable[[], dict[str, Tensor]]:
        """Windows of sessions (:meth:`sample`, ``batch_windows`` per update), after fitting the dataset
        statistics (:meth:`fit_dataset`); ``cfg``'s batch and reward settings are the TD family's."""
        self.fit_dataset(buffer)
        return lambda: self.sample(buffer, self.batch_windows, generator)

    def sample(self, buffer: EpisodeBuffer, batch_size: int, generator: torch.Generator) -> dict[str, Tensor]:
        """``batch_size`` windows of ``self.window`` steps (see the module doc)."""
        d, h, length, dev = buffer.data, buffer.horizon, self.window, buffer.device
        ep = torch.randint(0, buffer.size, (batch_size,), generator=generator, device="cpu").to(dev)
        t0 = torch.randint(0, h, (batch_size,), generator=generator, device="cpu").to(dev)
        t = t0[:, None] + torch.arange(length, device=dev)  # (B, L)
        mask, state_mask = t < h, t <= h
        tc = t.clamp(max=h - 1)
        e = ep[:, None].expand_as(t)
        last_state = d["next_observations"][ep, h - 1].unsqueeze(1)
        states = torch.where((t < h).unsqueeze(-1), d["observations"][e, tc], last_state)
        obs_t = t.clamp(max=h)
        rewards_full = d["rewards"][ep]
        rtg = returns_to_go(rewards_full, self.return_discount).gather(1, tc)
        m = mask.float()
        return {"states": states, "slates": d["slates"][e, obs_t], "clicks": d["clicks"][e, obs_t],
                "actions": d["actions"][e, tc] * m.unsqueeze(-1), "rewards": rewards_full.gather(1, tc) * m,
                "returns": rtg * m, "timesteps": t, "mask": m, "state_mask": state_mask.float()}

    def describe(self) -> dict[str, Any]:
        """How the method normalises and conditions on returns (stated in the result JSON)."""
        return {"return_discount": self.return_discount, "max_return_to_go_at_t0": float(self.rtg_max[0])}

    # ------------------------------------------------------------------ acting
    def begin(self, batch: int, target: float | None = None) -> Context:
        raise NotImplementedError

    def step(self, context: Context, states: Tensor, slates: Tensor, clicks: Tensor, rewards: Tensor
             ) -> tuple[Tensor, Context]:
        raise NotImplementedError

