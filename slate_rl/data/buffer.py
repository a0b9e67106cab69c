"""The one replay buffer: a device-resident ring buffer of whole episodes.

Online agents push finished sessions into it; offline training loads a dataset into it.
Storage is per episode (``capacity`` episodes of ``H`` steps), so both ways of sampling are
cheap index operations:

* :meth:`sample_episodes` returns whole sequences ``(B, H, ...)`` (+ the reset observation):
  what a GRU belief encoder, a Decision Transformer or a diffuser needs;
* :meth:`sample_transitions` returns ``(B, ...)`` single steps ``(episode, t)``.

Fields (per episode):

=================  ================  ===============================================
``slates``         (H+1, k) int64    shown slates; index 0 is the reset slate
``clicks``         (H+1, k) bool     clicks; index 0 on the reset slate
``actions``        (H, action_dim)   agent action chosen before step t+1 (float32)
``rewards``        (H,) float32      clicks at step t+1
=================  ================  ===============================================

Observation ``t`` is ``(slates[t], clicks[t])``; the action chosen from it is ``actions[t]``,
which produces observation ``t+1`` and reward ``rewards[t]``. Agents that need more per step
(SlateQ: the click probabilities of the shown slots) declare ``extras`` (name -> trailing
shape, float32, indexed like ``rewards``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor


class EpisodeBuffer:
    """Ring buffer of ``capacity`` episodes on ``device``."""

    def __init__(
        self, capacity: int, episode_length: int, slate_size: int, action_dim: int,
        device: torch.device | str = "cpu", action_dtype: torch.dtype = torch.float32,
        extras: Mapping[str, tuple[int, ...]] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.horizon, self.device = capacity, episode_length, torch.device(device)
        h, k = episode_length, slate_size
        self.data: dict[str, Tensor] = {
            "slates": torch.zeros(capacity, h + 1, k, dtype=torch.int64, device=self.device),
            "clicks": torch.zeros(capacity, h + 1, k, dtype=torch.bool, device=self.device),
            "actions": torch.zeros(capacity, h, action_dim, dtype=action_dtype, device=self.device),
            "rewards": torch.zeros(capacity, h, dtype=torch.float32, device=self.device),
        }
        for name, shape in (extras or {}).items():
            self.data[name] = torch.zeros(capacity, h, *shape, dtype=torch.float32, device=self.device)
        self.size = 0
        self.cursor = 0
        self.episodes_added = 0

    def __len__(self) -> int:
        return self.size

    def add(self, episodes: Mapping[str, Tensor]) -> None:
        """Append a batch of finished episodes (leading dim E); the oldest are overwritten."""
        n = next(iter(episodes.values())).shape[0]
        if set(episodes) != set(self.data):
            raise KeyError(f"episodes need exactly the fields {sorted(self.data)}, got {sorted(episodes)}")
        if n > self.capacity:
            episodes = {k: v[-self.capacity :] for k, v in episodes.items()}
            n = self.capacity
        idx = (self.cursor + torch.arange(n, device=self.device)) % self.capacity
        for key, value in episodes.items():
            self.data[key][idx] = value.to(self.device, self.data[key].dtype)
        self.cursor = (self.cursor + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        self.episodes_added += n

    def _check_nonempty(self) -> None:
        if self.size == 0:
            raise RuntimeError("the replay buffer is empty; collect episodes before sampling")

    def sample_episodes(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``batch_size`` whole episodes drawn uniformly with replacement."""
        self._check_nonempty()
        idx = torch.randint(0, self.size, (batch_size,), generator=generator, device="cpu").to(self.device)
        return {k: v[idx] for k, v in self.data.items()}

    def sample_transitions(self, batch_size: int, generator: torch.Generator | None = None,
                           fields: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """``batch_size`` single steps ``(episode, t)``: observation t (``slates``, ``clicks``),
        action t, reward t, observation t+1 (``next_slates``, ``next_clicks``), every extra at t,
        ``timesteps`` and ``episode_index``. ``fields`` restricts the gathered fields (faster)."""
        self._check_nonempty()
        ep = torch.randint(0, self.size, (batch_size,), generator=generator, device="cpu").to(self.device)
        t = torch.randint(0, self.horizon, (batch_size,), generator=generator, device="cpu").to(self.device)
        d = self.data
        out: dict[str, Tensor] = {"timesteps": t, "episode_index": ep}
        wanted = fields if fields is not None else (*d, "next_slates", "next_clicks")
        for name in wanted:
            if name in ("next_slates", "next_clicks"):
                out[name] = d[name[5:]][ep, t + 1]
            elif name in d:
                out[name] = d[name][ep, t]
            elif name not in out:
                raise KeyError(f"unknown field {name!r}; the buffer holds {sorted(d)}")
        return out

    def episodes(self) -> dict[str, Tensor]:
        """Every stored episode, oldest first."""
        order = (self.cursor + torch.arange(self.size, device=self.device)) % self.capacity \
            if self.size == self.capacity else torch.arange(self.size, device=self.device)
        return {k: v[order] for k, v in self.data.items()}

    def state_dict(self) -> dict[str, object]:
        data = {k: (v[: self.size] if self.size < self.capacity else v).cpu() for k, v in self.data.items()}
        return {"data": data, "size": self.size, "cursor": self.cursor, "episodes_added": self.episodes_added}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        data = state["data"]
        assert isinstance(data, Mapping)
        size = int(state["size"])  # type: ignore[call-overload]
        for k, v in data.items():
            self.data[k][:size] = v.to(self.device)
        self.size, self.cursor = size, int(state["cursor"])  # type: ignore[call-overload]
        self.episodes_added = int(state["episodes_added"])  # type: ignore[call-overload]
