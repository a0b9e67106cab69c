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
* ``act(observations) -> actions``: the deterministic action for normalised observations,
  inside the bounds ``center +- scale``.
* ``state_dict()`` / ``load_state_dict()``: networks, optimisers (``optimizers()``), schedulers
  and counters, so that a killed run resumes where it stopped.

Actions live in a box given per dimension by ``action_center`` and ``action_scale`` (the GeMS
latent bounds): policies output ``center + scale * tanh(.)``; noise and clipping that the
reference implementations express for a ``[-max_action, max_action]`` box are scaled by
``action_scale`` per dimension.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class OfflineAlgo(nn.Module):
    """Base class: subclasses implement ``update``, ``act`` and ``optimizers``."""

    name = "offline"

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

    def squash(self, u: Tensor) -> Tensor:
        """Map an unbounded output into the action box."""
        return self.action_center + self.action_scale * torch.tanh(u)

    def clamp_action(self, a: Tensor) -> Tensor:
        """Clip actions into the action box."""
        low, high = self.action_center - self.action_scale, self.action_center + self.action_scale
        return torch.maximum(torch.minimum(a, high), low)

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
        return result

    def update(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def act(self, observations: Tensor) -> Tensor:
        raise NotImplementedError
