"""The interface every offline algorithm follows (TD3+BC, CQL, IQL, BC).

An offline algorithm is a set of networks plus its losses; the one offline loop
(:mod:`slate_rl.offline.loop`) samples batches, normalises states, checks for divergence,
evaluates, checkpoints and logs. An algorithm sees:

* ``update(batch) -> metrics``: one gradient step on a batch of transitions with keys
  ``observations`` (B, obs_dim) float32 (already normalised by the loop),
  ``actions`` (B, action_dim) float32 (inside the action bounds),
  ``rewards`` (B,) float32 (already multiplied by the reward scale),
  ``next_observations`` (B, obs_dim) float32 (normalised),
  ``dones`` (B,) float32 (1.0 where the target must not bootstrap).
  ``metrics`` maps names to 0-d tensors **that stay on the device** (the loop reads them only at
  log intervals, so that a step never waits for the device). Every Q-like quantity the algorithm
  computes is reported under a name starting with ``q`` (``q_mean``, ``q_max``, ``q_target_mean``...):
  the loop's divergence guard checks those and every loss.
* ``losses(batch) -> (losses, metrics)``: the loss of each optimiser (keyed like ``optimizers()``)
  at the current parameters, no optimisation; each loss moves only its own optimiser's parameters
  (the conformance test checks the gradients). The default ``update`` descends their sum, steps the
  schedulers and then the target networks (``update_targets``).
* ``begin(batch, target) -> context`` and ``step(context, states, slates, clicks, rewards) -> (actions,
  context)``: how every method acts online, each session carrying its own context (none by default, and
  ``step`` is ``act(states)``); the sequence family (:class:`~slate_rl.offline.sequence.SequenceAlgo`)
  keeps its per-user history there.
* ``act(observations) -> actions``: the deterministic action for normalised observations,
  inside the bounds ``center +- scale``, for the methods that act from the current state alone
  (``acts_on_states``; the TD family).
* ``sampler(buffer, cfg, generator)``: the loop's source of batches (transitions by default,
  :func:`sample_batch`; windows of sessions for the sequence family).
* ``state_dict()`` / ``load_state_dict()``: networks, optimisers (``optimizers()``), schedulers
  and counters, so that a killed run resumes where it stopped.

Actions live in a box given per dimension by ``action_center`` and ``action_scale`` (the GeMS
latent bounds): policies output ``center + scale * tanh(.)``; noise and clipping that the
reference implementations express for a ``[-max_action, max_action]`` box are scaled by
``action_scale`` per dimension. Equivalently, an algorithm may work on normalised actions
``(a - center) / scale`` in ``[-1, 1]^d`` (``normalise``), the reference's D4RL setting with
``max_action = 1``, and map its outputs back with ``squash``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.offline.config import OfflineConfig

TRANSITION_FIELDS = ("observations", "actions", "rewards", "next_observations")


def sample_batch(buffer: EpisodeBuffer, cfg: OfflineConfig, generator: torch.Generator) -> dict[str, Tensor]:
    """A batch of transitions in the layout :meth:`OfflineAlgo.update` expects."""
    tr = buffer.sample_transitions(cfg.batch_size, generator, fields=TRANSITION_FIELDS)
    if cfg.bootstrap_timeout:
        dones = torch.zeros_like(tr["rewards"])
    else:
        dones = (tr["timesteps"] == buffer.horizon - 1).float()
    rewards = tr["rewards"] * cfg.reward_scale if cfg.reward_scale != 1.0 else tr["rewards"]
    return {"observations": tr["observations"], "actions": tr["actions"], "rewards": rewards,
            "next_observations": tr["next_observations"], "dones": dones}


class OfflineAlgo(nn.Module):
    """Base class: subclasses implement ``update``, ``act`` and ``optimizers``."""

    name = "offline"
    acts_on_states: ClassVar[bool] = True
    """Whether the method acts from the current state alone (``act``); otherwise only through ``begin``/``step``."""

    def __init__(self, obs_dim: int, action_center: Tensor, action_scale: Tensor, gamma: float) -> None:
        super().__init__()
        if action_center.shape != action_scale.shape or action_center.dim() != 1:
            raise ValueError("action_center and action_scale must be 1-d tensors of the same shape")
        self.obs_dim, self.action_dim, self.gamma = obs_dim, int(action_center.shape[0]), float(gamma)
        self.action_center: Tensor
        self.action_scale: Tensor
        self.register_buffer("action_center", action_center.detach().clone().float())
        self.register_buffer("action_scale", action_scale.detach().clone().float())
        self.updates: Tensor
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))
        self._n_updates = 0  # host mirror of ``updates``: schedules never read the device

    def squash(self, u: Tensor) -> Tensor:
        """Map an unbounded output into the action box."""
        return self.action_center + self.action_scale * torch.tanh(u)

    def normalise(self, a: Tensor) -> Tensor:
        """Map box actions to [-1, 1]^d."""
        return (a - self.action_center) / self.action_scale

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {}

    def schedulers(self) -> dict[str, Any]:
        return {}

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return {"modules": super().state_dict(*args, **kwargs),
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers().items()},
                "schedulers": {name: s.state_dict() for name, s in self.schedulers().items()}}

    def load_state_dict(self, state: dict[str, Any], strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        result = super().load_state_dict(state["modules"], strict=strict, assign=assign)
        for name, opt in self.optimizers().items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in self.schedulers().items():
            sched.load_state_dict(state["schedulers"][name])
        self._n_updates = int(self.updates)
        return result

    def tick(self) -> int:
        """Count one update; return the number of updates so far, this one included."""
        self._n_updates += 1
        self.updates.add_(1)
        return self._n_updates

    @staticmethod
    def descend(loss: Tensor, optimizers: Iterable[torch.optim.Optimizer]) -> None:
        """One gradient step of ``optimizers`` on ``loss``."""
        opts = list(optimizers)
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in opts:
            opt.step()

    def losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        raise NotImplementedError

    def update_targets(self, n_updates: int) -> None:
        """Polyak-average the target networks after update number ``n_updates`` (none by default)."""

    def update(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """All losses at the same parameters, one backward pass through their sum, every optimiser steps."""
        losses, metrics = self.losses(batch)
        self.descend(torch.stack(list(losses.values())).sum(), self.optimizers().values())
        for sched in self.schedulers().values():
            sched.step()
        self.update_targets(self.tick())
        return metrics

    def sampler(self, buffer: EpisodeBuffer, cfg: OfflineConfig, generator: torch.Generator
                ) -> Callable[[], dict[str, Tensor]]:
        """The batches the loop trains on: transitions of ``buffer`` (:func:`sample_batch`)."""
        return lambda: sample_batch(buffer, cfg, generator)

    def begin(self, batch: int, target: float | None = None) -> Any:
        """The context of ``batch`` new sessions (``target``: a return to condition on, for the methods that
        take one); none by default."""
        return None

    def step(self, context: Any, states: Tensor, slates: Tensor, clicks: Tensor, rewards: Tensor
             ) -> tuple[Tensor, Any]:
        """The actions of one step of every session (normalised ``states``, the observed ``slates``/``clicks``,
        the ``rewards`` of the previous actions) and the new context; by default ``act(states)``."""
        return self.act(states), context

    @torch.no_grad()
    def act(self, observations: Tensor) -> Tensor:
        raise NotImplementedError(f"{self.name} acts with a per-user context only: begin() and step()")

    def describe(self) -> dict[str, Any] | None:
        """What the result JSON states about how the method was fitted to the data (none by default)."""
        return None


def adam(params: Iterable[Tensor], lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel (CPU and CUDA): the reference's update rule in one call per step."""
    return torch.optim.Adam(params, lr=lr, fused=True)


class Normalizer(torch.nn.Module):
    """State normalisation with the dataset's statistics (identity when disabled)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def fit(self, states: Tensor, eps: float = 1e-3) -> None:
        self.mean.copy_(states.mean(0))
        self.std.copy_(states.std(0) + eps)

    def forward(self, states: Tensor) -> Tensor:
        return (states - self.mean) / self.std
