"""Gymnasium interfaces over the batched TopicRec core.

``TopicRecEnv`` is a single-user ``gymnasium.Env``; ``TopicRecVectorEnv`` is a native
``gymnasium.vector.VectorEnv`` that steps all its users in one tensor call. Both run the same
:class:`~slate_rl.sim.core.TopicRec` core. Slot ``j`` of a vector env reset with ``seed=s``
is exactly a single env reset with ``seed=s + j`` (the ``SyncVectorEnv`` convention), because
every random number is keyed per user.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from slate_rl.core import rng
from slate_rl.core.errors import ConfigError
from slate_rl.sim import ENV_ID
from slate_rl.sim.config import TopicRecConfig
from slate_rl.sim.core import SimState, StepResult, TopicRec, select
from slate_rl.sim.protocol import make_simulator


def _topicrec(env: str | TopicRecConfig | Mapping[str, Any], item_embeddings: np.ndarray | str | None,
              embeddings_seed: int | None, device: str) -> TopicRec:
    sim = make_simulator(env, item_embeddings, embeddings_seed, device)
    if not isinstance(sim, TopicRec):
        raise ConfigError(f"{ENV_ID} wraps TopicRec; {type(sim).__name__} has no Gymnasium environment")
    return sim


def _spaces(cfg: TopicRecConfig) -> tuple[spaces.Dict, spaces.MultiDiscrete]:
    obs = spaces.Dict(
        {
            "slate": spaces.MultiDiscrete(np.full(cfg.slate_size, cfg.num_items, dtype=np.int64)),
            "clicks": spaces.MultiBinary(cfg.slate_size),
        }
    )
    act = spaces.MultiDiscrete(
        np.full(cfg.slate_size, cfg.num_items + 1, dtype=np.int64), start=np.full(cfg.slate_size, -1, dtype=np.int64)
    )
    return obs, act


def _observation(result: StepResult) -> dict[str, np.ndarray]:
    return {
        "slate": result.slate.cpu().numpy().astype(np.int64),
        "clicks": result.clicks.cpu().numpy().astype(np.int8),
    }


def _info(state: SimState, result: StepResult) -> dict[str, np.ndarray]:
    """Privileged information (for oracles and analysis only)."""
    fresh = {  # copies: tensors carried over unchanged between steps must not share memory
        "user": state.user,
        "user_effective": result.user_effective,
        "bored": state.bored,
        "relevance": result.relevance,
    }
    return {k: v.cpu().numpy().copy() for k, v in fresh.items()}


class TopicRecEnv(gym.Env[dict[str, np.ndarray], np.ndarray]):
    """TopicRec, one user at a time.

    ## Description
    Slate recommendation with 1000 items in 10 topics (Deffayet et al., WSDM 2023). Each
    episode is a new user with a drifting preference vector, boredom and a position-based
    click model; the agent shows 10 items per step.

    ## Action Space
    ``MultiDiscrete([1001] * 10, start=-1)``: item ids; ``-1`` asks for the short-term
    oracle's item at that rank (privileged, for reference policies).

    ## Observation Space
    ``Dict(slate=MultiDiscrete([1000] * 10), clicks=MultiBinary(10))``: the slate shown and
    its clicks.

    ## Rewards
    The number of clicks on the slate (0..10).

    ## Starting State
    A new user; the observation is the initial slate (the most typical item of each topic)
    and the clicks on it.

    ## Episode End
    Truncation after ``episode_length`` (100) steps; never terminated.

    ## Arguments
    ``env`` (preset name, :class:`TopicRecConfig` or the mapping of its fields, as a dataset's
    ``env_config`` and its Minari export's environment spec hold it), ``item_embeddings`` (array, path, or
    ``None`` to generate the table from ``embeddings_seed``), ``device``.
    ``info`` holds privileged state: ``user``, ``user_effective``, ``bored``, ``relevance``.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        env: str | TopicRecConfig | Mapping[str, Any] = "focused_topdown",
        item_embeddings: np.ndarray | str | None = None,
        embeddings_seed: int | None = None,
        device: str = "cpu",
    ) -> None:
        self.sim = _topicrec(env, item_embeddings, embeddings_seed, device)
        self.observation_space, self.action_space = _spaces(self.sim.config)  # type: ignore[assignment]
        self._seed: int | None = None
        self._episode = -1
        self._state: SimState | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None:
            self._seed, self._episode = seed, 0
        else:
            if self._seed is None:
                self._seed = int(self.np_random.integers(0, 2**62))
            self._episode += 1
        key = rng.derive_key(self._seed, torch.tensor([self._episode]), device=self.sim.device)
        self._state, result = self.sim.reset(key)
        return _unbatch(_observation(result)), _unbatch(_info(self._state, result))

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before step(), and again after the episode is truncated")
        slate = torch.as_tensor(np.asarray(action), device=self.sim.device).reshape(1, -1)
        state, result = self.sim.step(self._state, slate)
        truncated = bool(result.truncated[0])
        self._state = None if truncated else state
        return (
            _unbatch(_observation(result)), float(result.reward[0]), False, truncated,
            _unbatch(_info(state, result)),
        )


def _unbatch(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v[0] for k, v in d.items()}


class TopicRecVectorEnv(VectorEnv):
    """TopicRec for ``num_envs`` users stepped together (native, no per-user Python loop).

    Same dynamics, spaces and info as :class:`TopicRecEnv`; autoreset mode ``NEXT_STEP``: the
    step after a truncation resets that slot (its action is ignored, reward 0).
    """

    metadata: dict[str, Any] = {"render_modes": [], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int,
        env: str | TopicRecConfig = "focused_topdown",
        item_embeddings: np.ndarray | str | None = None,
        embeddings_seed: int | None = None,
        device: str = "cpu",
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.sim = _topicrec(env, item_embeddings, embeddings_seed, device)
        self.num_envs = num_envs
        self.single_observation_space, self.single_action_space = _spaces(self.sim.config)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        dev = self.sim.device
        self._seeds = torch.zeros(num_envs, dtype=torch.int64, device=dev)
        self._episodes = torch.zeros(num_envs, dtype=torch.int64, device=dev)
        self._needs_reset = torch.zeros(num_envs, dtype=torch.bool, device=dev)
        self._state: SimState | None = None

    def _keys(self, idx: torch.Tensor) -> torch.Tensor:
        return rng.derive_key(self._seeds[idx], self._episodes[idx], device=self.sim.device)

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        dev = self.sim.device
        first = seed if isinstance(seed, int) or seed is None else None
        super().reset(seed=first)
        if seed is None:
            if self._state is None:
                base = int(self.np_random.integers(0, 2**62))
                self._seeds = torch.arange(self.num_envs, dtype=torch.int64, device=dev) + base
                self._episodes.zero_()
            else:
                self._episodes += 1
        else:
            seeds = [seed + j for j in range(self.num_envs)] if isinstance(seed, int) else list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} environments")
            self._seeds = torch.tensor(seeds, dtype=torch.int64, device=dev)
            self._episodes.zero_()
        idx = torch.arange(self.num_envs, device=dev)
        self._state, result = self.sim.reset(self._keys(idx))
        self._needs_reset.zero_()
        return _observation(result), _info(self._state, result)

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        dev = self.sim.device
        slate = torch.as_tensor(np.asarray(actions), device=dev).reshape(self.num_envs, -1)
        resetting = self._needs_reset
        if bool(resetting.any()):
            self._episodes = torch.where(resetting, self._episodes + 1, self._episodes)
            reset_state, reset_result = self.sim.reset(self._keys(torch.arange(self.num_envs, device=dev)))
            step_slate = torch.where(resetting[:, None], torch.zeros_like(slate), slate)
            step_state, step_result = self.sim.step(self._state, step_slate)
            self._state = reset_state.where(resetting, step_state)
            result = select(resetting, reset_result, step_result)
        else:
            self._state, result = self.sim.step(self._state, slate)
        truncated = result.truncated & ~resetting
        self._needs_reset = truncated.clone()
        terminated = np.zeros(self.num_envs, dtype=bool)
        return (
            _observation(result),
            result.reward.cpu().numpy().astype(np.float64),
            terminated,
            truncated.cpu().numpy(),
            _info(self._state, result),
        )
