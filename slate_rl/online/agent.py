"""The interface every online agent follows (and the offline loop reuses).

* ``act(slates, clicks, hidden, deterministic) -> (slate, action, hidden)``: one step for B
  users from their last observation; ``hidden`` is the agent's recurrent state (``None`` at
  the start of a session); ``action`` is what the replay buffer stores (the latent action).
* ``random_act(...)``: the same with uniformly random actions (warm-up).
* ``update(episodes) -> dict[str, float]``: one gradient step on a batch of whole episodes.
* ``state_dict()`` / ``load_state_dict()``: networks, optimisers and counters.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


class Agent(nn.Module):
    """Base class: subclasses implement ``act``, ``random_act`` and ``update``."""

    name = "agent"
    action_dim: int

    def act(self, slates: Tensor, clicks: Tensor, hidden: Any, deterministic: bool = False
            ) -> tuple[Tensor, Tensor, Any]:
        raise NotImplementedError

    def random_act(self, slates: Tensor, clicks: Tensor, hidden: Any) -> tuple[Tensor, Tensor, Any]:
        raise NotImplementedError

    def update(self, episodes: dict[str, Tensor]) -> dict[str, float]:
        raise NotImplementedError
