"""Offline policies acting online: a frozen belief encoder, a latent policy and a GeMS decoder.

:class:`LatentPolicy` follows the online :class:`~slate_rl.online.base.Agent` interface, so the
online loop's ``evaluate`` runs it on the fixed test users exactly like an online agent. It also
gives the reference points every offline result is shown beside: a constant latent action
(z = 0) and uniformly random latent actions inside the GeMS bounds.

The saved policy (``data/policies/{env}/{quality}/{algo}/seed{s}.pt``) holds tensors and JSON
only: the algorithm's networks, the state normaliser, the belief encoder and the action bounds.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slate_rl.core.checks import metadata_object, require_finite
from slate_rl.core.errors import ArtifactError
from slate_rl.core.io import load_checkpoint, save_torch
from slate_rl.models.belief import BeliefEncoder
from slate_rl.models.rankers import GeMSRanker
from slate_rl.offline.base import Normalizer, OfflineAlgo
from slate_rl.online.base import Agent

POLICY_FORMAT = "slate_rl.offline_policy"
POLICY_VERSION = 1


class LatentPolicy(Agent):
    """Acts through ``encoder`` (frozen) -> ``action_fn`` (belief -> latent action) -> ``ranker``."""

    name = "latent_policy"

    def __init__(self, encoder: BeliefEncoder, ranker: GeMSRanker, action_fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.ranker = ranker
        self.action_fn = action_fn
        self.action_dim = ranker.action_dim

    @torch.no_grad()
    def act(self, slates: Tensor, clicks: Tensor, hidden: Any, deterministic: bool = True,
            privileged: Tensor | None = None) -> tuple[Tensor, Tensor, Any]:
        belief = self.encoder.step(slates, clicks, hidden)
        action = self.action_fn(belief)
        return self.ranker.rank(action), action, belief


class OfflinePolicy(Agent):
    """A trained offline method of either family acting online: ``encoder`` (frozen) gives the normalised belief
    of each user, the method acts through its ``begin``/``step`` contract from its per-user context (carried in
    ``hidden`` with the belief; a TD method keeps none and acts from the state), ``ranker`` decodes. The reward
    of the previous action is the number of clicks in the current observation. The method is a submodule, so
    ``eval()`` (the evaluation's) switches its dropout off. ``target``: the return a sequence method conditions
    on (None: its own)."""

    name = "offline_policy"

    def __init__(self, encoder: BeliefEncoder, ranker: GeMSRanker, algo: OfflineAlgo, normalizer: Normalizer,
                 target: float | None = None) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(encoder).requires_grad_(False)
        self.ranker, self.algo, self.normalizer, self.target = ranker, algo, normalizer, target
        self.action_dim = ranker.action_dim

    @torch.no_grad()
    def act(self, slates: Tensor, clicks: Tensor, hidden: Any, deterministic: bool = True,
            privileged: Tensor | None = None) -> tuple[Tensor, Tensor, Any]:
        if hidden is None:
            belief, context = None, self.algo.begin(slates.shape[0], self.target)
            rewards = torch.zeros(slates.shape[0], device=slates.device)
        else:
            belief, context = hidden
            rewards = clicks.sum(-1, dtype=torch.float32)
        belief = self.encoder.step(slates, clicks, belief)
        action, context = self.algo.step(context, self.normalizer(belief), slates, clicks, rewards)
        return self.ranker.rank(action), action, (belief, context)


def policy_for(encoder: BeliefEncoder, ranker: GeMSRanker, algo: OfflineAlgo, normalizer: Normalizer,
               target: float | None = None) -> OfflinePolicy:
    """The policy of a trained offline algorithm of either family (``target``: sequence methods only)."""
    return OfflinePolicy(encoder, ranker, algo, normalizer, target)


def zero_policy(encoder: BeliefEncoder, ranker: GeMSRanker) -> LatentPolicy:
    """The constant latent action z = 0 (the spec's reference point)."""
    return LatentPolicy(encoder, ranker, lambda b: torch.zeros(b.shape[0], ranker.action_dim, device=b.device))


def random_policy(encoder: BeliefEncoder, ranker: GeMSRanker) -> LatentPolicy:
    """Latent actions drawn uniformly inside the GeMS bounds (the random reference)."""
    return LatentPolicy(encoder, ranker, lambda b: ranker.uniform_actions(b.shape[0]))


def save_policy(path: str | os.PathLike[str], algo: OfflineAlgo, normalizer: Normalizer, encoder: BeliefEncoder,
                meta: dict[str, Any]) -> None:
    payload = {
        "format": POLICY_FORMAT, "version": POLICY_VERSION, "algo": algo.name,
        "networks": {k: v.detach().cpu() for k, v in nn.Module.state_dict(algo).items()},
        "normalizer": {k: v.detach().cpu() for k, v in normalizer.state_dict().items()},
        "encoder": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "action_center": algo.action_center.detach().cpu(), "action_scale": algo.action_scale.detach().cpu(),
        "meta": json.dumps(meta),
    }
    require_finite(path, f"{algo.name} policy", payload)
    save_torch(path, payload)


def read_policy(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A saved offline policy's payload and its metadata (checked: a policy file of this version)."""
    p = Path(path)
    payload = load_checkpoint(p, POLICY_FORMAT, POLICY_VERSION, "offline policy")
    return payload, metadata_object(payload["meta"], p, "meta")


def load_policy(path: str | os.PathLike[str], algo: OfflineAlgo, normalizer: Normalizer,
                encoder: BeliefEncoder) -> dict[str, Any]:
    """Load a saved offline policy into freshly built modules (built with the same settings)."""
    p = Path(path)
    payload, meta = read_policy(p)
    if payload.get("algo") != algo.name:
        raise ArtifactError(f"{p}: field 'algo' is {payload.get('algo')!r}, expected {algo.name!r}")
    for field in ("action_center", "action_scale"):
        saved, expected = payload[field], getattr(algo, field).cpu()
        if saved.shape != expected.shape or not torch.allclose(saved, expected, atol=1e-6):
            raise ArtifactError(f"{p}: field {field!r} does not match the GeMS bounds; use the policy's own GeMS")
    try:
        nn.Module.load_state_dict(algo, payload["networks"])
        normalizer.load_state_dict(payload["normalizer"])
        encoder.load_state_dict(payload["encoder"])
    except (RuntimeError, KeyError) as exc:
        raise ArtifactError(f"{p}: networks do not fit this algorithm's settings ({exc})") from exc
    return meta
