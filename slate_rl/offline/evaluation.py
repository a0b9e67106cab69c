"""Online evaluation of an offline policy: its test return beside the reference points, and the
normalised score.

The reference points, on the same fixed test users: the behaviour return (dataset metadata), the
expert acting as during collection and deterministically, the constant latent action z = 0 and
uniform random latent actions. ``normalized_score = 100 * (R - R_random) / (R_expert - R_random)``
with R_expert the expert agent's *deterministic* test return (as D4RL normalises by an expert
policy, never by a dataset's own return) and R_random the return of uniform random latent actions,
the random quality's behaviour.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from slate_rl.core.stats import mean_ci
from slate_rl.models.belief import BeliefEncoder
from slate_rl.models.rankers import GeMSRanker
from slate_rl.offline.datasets import NoisyPolicy
from slate_rl.offline.policy import random_policy, zero_policy
from slate_rl.online.base import Agent
from slate_rl.online.rollouts import Mode, policy_returns
from slate_rl.online.sac import SAC
from slate_rl.sim.core import TopicRec

NORMALIZED_SCORE_DEFINITION = (
    "100 * (R - R_random) / (R_expert - R_random); R_expert: the expert agent's deterministic test return, "
    "R_random: uniform random latent actions (the random quality's behaviour)"
)


def evaluate_returns(sim: TopicRec, policy: Agent, seed: int, sessions: int, mode: Mode = "eval") -> np.ndarray:
    """Returns of ``policy`` on users ``0..sessions-1`` of ``seed`` (``mode`` "train" samples actions, seeded)."""
    torch.manual_seed(seed)
    return policy_returns(sim, policy, seed, sessions, mode).cpu().numpy()


def return_summary(returns: np.ndarray) -> dict[str, Any]:
    s = mean_ci(returns)
    return {"return_mean": s["mean"], "return_ci95": s["ci"], "return_std": s["std"], "n_sessions": s["n"]}


def reference_returns(sim: TopicRec, expert: SAC, encoder: BeliefEncoder, decoder: GeMSRanker,
                      dataset_metadata: dict[str, Any], seed: int, sessions: int, expert_noise: float,
                      expert_stochastic: bool) -> dict[str, dict[str, Any]]:
    """The reference points of an offline policy on the test users (see the module docstring)."""
    behaviour = dataset_metadata["behaviour_return"]

    def summary(policy: Agent, mode: Mode = "eval") -> dict[str, Any]:
        return return_summary(evaluate_returns(sim, policy, seed, sessions, mode))

    return {
        "behaviour": {"return_mean": behaviour["mean"], "return_ci95": behaviour["ci95"],
                      "source": behaviour.get("source", "dataset metadata")},
        "expert": summary(NoisyPolicy(expert, expert_noise), "train" if expert_stochastic else "eval"),
        "expert_deterministic": summary(expert),
        "zero_action": summary(zero_policy(encoder, decoder)),
        "random": summary(random_policy(encoder, decoder)),
    }


def normalized_score(test_return: float, references: dict[str, dict[str, Any]]) -> float:
    """``100 * (R - R_random) / (R_expert - R_random)``; NaN when the expert is no better than random."""
    expert = references["expert_deterministic"]["return_mean"]
    rand = references["random"]["return_mean"]
    return 100.0 * (test_return - rand) / (expert - rand) if expert != rand else math.nan
