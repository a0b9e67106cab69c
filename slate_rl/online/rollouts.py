"""Run an agent in the batched simulator: B users in parallel, whole sessions.

Used for training (stochastic actions, recorded into the replay buffer), warm-up (uniform
random actions) and evaluation (deterministic actions on fixed users).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from slate_rl.core import rng
from slate_rl.online.base import Agent
from slate_rl.sim.protocol import Simulator, privileged

Mode = Literal["train", "eval", "random"]


def user_keys(seed: int, start: int, count: int, device: torch.device) -> Tensor:
    """Keys of users ``start .. start+count-1`` under ``seed`` (as in slate_rl.sim.rollout)."""
    return rng.derive_key(seed, torch.arange(start, start + count, dtype=torch.int64, device=device), device=device)


@torch.no_grad()
def run_agent_sessions(sim: Simulator, agent: Agent, keys: Tensor, mode: Mode, record: bool = True,
                       random_width: float = 1.0) -> tuple[Tensor, dict[str, Tensor] | None]:
    """Full sessions for users ``keys``; returns per-session returns and (if ``record``) episodes
    in the replay-buffer layout (slates/clicks with the reset observation at index 0). In ``random``
    mode, actions are drawn in the middle ``random_width`` of the action box."""
    c = sim.config
    b, h, k = keys.shape[0], c.episode_length, c.slate_size
    state, obs = sim.reset(keys)
    hidden = None
    oracle = privileged(sim, agent.name) if agent.privileged and mode != "random" else None
    total = torch.zeros(b, device=sim.device)
    if record:
        slates = torch.empty(b, h + 1, k, dtype=torch.int64, device=sim.device)
        clicks = torch.empty(b, h + 1, k, dtype=torch.bool, device=sim.device)
        actions = torch.empty(b, h, agent.action_dim, dtype=torch.float32, device=sim.device)
        rewards = torch.empty(b, h, dtype=torch.float32, device=sim.device)
        click_probs = torch.empty(b, h, k, dtype=torch.float32, device=sim.device)
        extras = agent.buffer_extras()
        users = (torch.empty(b, h, c.embedding_dim, dtype=torch.float32, device=sim.device)
                 if "users" in extras else None)
        slates[:, 0], clicks[:, 0] = obs.slate, obs.clicks
    for t in range(h):
        if mode == "random":
            slate, action, hidden = agent.random_act(obs.slate, obs.clicks, hidden, random_width)
        else:
            relevance = oracle.next_relevance(state) if oracle is not None else None
            slate, action, hidden = agent.act(obs.slate, obs.clicks, hidden, mode == "eval", relevance)
        state, obs = sim.step(state, slate, validate=False)
        total += obs.reward
        if record:
            slates[:, t + 1], clicks[:, t + 1] = obs.slate, obs.clicks
            actions[:, t], rewards[:, t] = action, obs.reward
            click_probs[:, t] = obs.click_probability
            if users is not None:  # the raw preference vector after the step (privileged)
                users[:, t] = state.user
    episodes = None
    if record:
        episodes = {"slates": slates, "clicks": clicks, "actions": actions, "rewards": rewards}
        if "click_probs" in extras:
            episodes["click_probs"] = click_probs
        if users is not None:
            episodes["users"] = users
    return total, episodes


@torch.no_grad()
def policy_returns(sim: Simulator, policy: Agent, seed: int, sessions: int, mode: Mode, batch: int = 4096) -> Tensor:
    """Per-session returns of ``policy`` acting in ``mode`` on users ``0..sessions-1`` of ``seed``."""
    was_training = policy.training
    policy.eval()
    out = []
    for start in range(0, sessions, batch):
        keys = user_keys(seed, start, min(batch, sessions - start), sim.device)
        out.append(run_agent_sessions(sim, policy, keys, mode, record=False)[0])
    policy.train(was_training)
    return torch.cat(out)
