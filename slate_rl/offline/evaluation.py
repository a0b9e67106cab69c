"""Online evaluation of an offline policy: its test return beside the reference points, and the
normalised score.

The reference points, on the same fixed test users: the behaviour return (dataset metadata), the
expert acting as during collection and deterministically, the constant latent action z = 0 and
uniform random latent actions. The last four are the same for every dataset of an environment (one
expert, one GeMS): the ``offline-references`` stage measures them once, into
``data/offline/{env}/references.json``, which ``collect`` and ``train-offline`` read (:func:`load_references`
refuses a file measured with other inputs); without it they measure them themselves.

``normalized_score = 100 * (R - R_random) / (R_expert - R_random)`` with R_expert the expert agent's
*deterministic* test return (as D4RL normalises by an expert policy, never by a dataset's own return)
and R_random the return of uniform random latent actions, the random quality's behaviour.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slate_rl.core.checks import metadata_object
from slate_rl.core.errors import ArtifactError
from slate_rl.core.stats import mean_ci
from slate_rl.models.belief import BeliefEncoder
from slate_rl.models.rankers import GeMSRanker
from slate_rl.offline.datasets import NoisyPolicy
from slate_rl.offline.policy import random_policy, zero_policy
from slate_rl.online.base import Agent
from slate_rl.online.rollouts import Mode, policy_returns
from slate_rl.online.sac import SAC
from slate_rl.sim.protocol import Simulator

NORMALIZED_SCORE_DEFINITION = (
    "100 * (R - R_random) / (R_expert - R_random); R_expert: the expert agent's deterministic test return, "
    "R_random: uniform random latent actions (the random quality's behaviour)"
)


def evaluate_returns(sim: Simulator, policy: Agent, seed: int, sessions: int, mode: Mode = "eval") -> np.ndarray:
    """Returns of ``policy`` on users ``0..sessions-1`` of ``seed`` (``mode`` "train" samples actions, seeded)."""
    torch.manual_seed(seed)
    return policy_returns(sim, policy, seed, sessions, mode).cpu().numpy()


def return_summary(returns: np.ndarray) -> dict[str, Any]:
    s = mean_ci(returns)
    return {"return_mean": s["mean"], "return_ci95": s["ci"], "return_std": s["std"], "n_sessions": s["n"]}


REFERENCES_FORMAT = "slate_rl.offline_references"
REFERENCES_VERSION = 1
POLICY_REFERENCES = ("expert", "expert_deterministic", "zero_action", "random")
"""The reference policies measured once per environment (``data/offline/{env}/references.json``)."""


def policy_references(sim: Simulator, expert: SAC, encoder: BeliefEncoder, decoder: GeMSRanker, seed: int,
                      sessions: int, expert_noise: float, expert_stochastic: bool) -> dict[str, dict[str, Any]]:
    """The reference policies on the test users: the expert as during collection and deterministically, z = 0
    and uniform random latent actions in ``decoder``'s box (the same for every dataset, method and seed)."""

    def summary(policy: Agent, mode: Mode = "eval") -> dict[str, Any]:
        return return_summary(evaluate_returns(sim, policy, seed, sessions, mode))

    return {
        "expert": summary(NoisyPolicy(expert, expert_noise), "train" if expert_stochastic else "eval"),
        "expert_deterministic": summary(expert),
        "zero_action": summary(zero_policy(encoder, decoder)),
        "random": summary(random_policy(encoder, decoder)),
    }


def reference_returns(policies: dict[str, dict[str, Any]], dataset_metadata: dict[str, Any]
                      ) -> dict[str, dict[str, Any]]:
    """The reference points of an offline result: the dataset's behaviour return beside ``policies``."""
    behaviour = dataset_metadata["behaviour_return"]
    return {
        "behaviour": {"return_mean": behaviour["mean"], "return_ci95": behaviour["ci95"],
                      "source": behaviour.get("source", "dataset metadata")},
        **policies,
    }


def references_document(policies: dict[str, dict[str, Any]], settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON object of a references file: ``settings`` (environment, input hashes, test users, the expert's
    collection mode) say which runs may use ``policies``."""
    return {"format": REFERENCES_FORMAT, "version": REFERENCES_VERSION, "settings": settings, "references": policies}


def load_references(path: str | os.PathLike[str], settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The reference policies of a references file, refused with one error when its settings differ from
    ``settings`` (another environment, GeMS, expert, item table, test users or collection mode) or it is
    damaged."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{p}: references file unreadable ({exc.strerror or exc}); build it with "
                            f"slate-rl offline-references (snakemake {p})") from None
    doc = metadata_object(raw, p, "references file")
    if doc.get("format") != REFERENCES_FORMAT or doc.get("version") != REFERENCES_VERSION:
        raise ArtifactError(f"{p}: not a references file of this slate_rl (format {doc.get('format')!r}, version "
                            f"{doc.get('version')!r}); rebuild it with slate-rl offline-references")
    stored = doc.get("settings")
    if not isinstance(stored, dict):
        raise ArtifactError(f"{p}: field 'settings' is {stored!r}, expected an object; rebuild the file")
    for key, want in settings.items():
        if stored.get(key) != want:
            raise ArtifactError(f"{p}: measured with {key} = {stored.get(key)!r}, this run has {want!r}; pass the "
                                "references of this run's inputs (rebuild them with slate-rl offline-references)")
    policies = doc.get("references")
    if not isinstance(policies, dict):
        raise ArtifactError(f"{p}: field 'references' is {policies!r}, expected an object; rebuild the file")
    for name in POLICY_REFERENCES:
        ref = policies.get(name)
        if not (isinstance(ref, dict) and isinstance(ref.get("return_mean"), int | float)
                and not isinstance(ref.get("return_mean"), bool) and math.isfinite(ref["return_mean"])):
            raise ArtifactError(f"{p}: field 'references.{name}' is {ref!r}, expected an object with a finite "
                                "'return_mean'; rebuild the file")
    return {name: policies[name] for name in POLICY_REFERENCES}


def normalized_score(test_return: float, references: dict[str, dict[str, Any]]) -> float:
    """``100 * (R - R_random) / (R_expert - R_random)``; NaN when the expert is no better than random."""
    expert = references["expert_deterministic"]["return_mean"]
    rand = references["random"]["return_mean"]
    return 100.0 * (test_return - rand) / (expert - rand) if expert != rand else math.nan
