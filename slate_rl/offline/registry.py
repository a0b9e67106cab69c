"""Registry of the offline algorithms: names, config classes and one constructor.

Two families over the same loop (:mod:`slate_rl.offline.loop`): TD methods (TD3+BC, CQL, IQL, BC,
FQL, IDQL) trained on transitions, and sequence methods (:mod:`slate_rl.offline.sequence`: Decision
Transformer, Decision Diffuser) trained on windows of whole sessions. A method is registered by its config
class in :data:`slate_rl.offline.config.METHODS` (``METHOD``: display name, class, family, priority, test
sizes); this module builds it from there.
:func:`algo_from_policy` rebuilds a trained method from its policy file (the counterpart of
:func:`slate_rl.online.registry.agent_from_checkpoint`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor

from slate_rl.core.config import from_dict, resolve_object
from slate_rl.core.errors import ArtifactError, ConfigError
from slate_rl.models.belief import BeliefEncoder
from slate_rl.offline.base import Normalizer, OfflineAlgo
from slate_rl.offline.config import ALGO_CONFIGS, METHODS
from slate_rl.offline.policy import load_policy, read_policy
from slate_rl.offline.sequence import SequenceAlgo, SessionSpec

ALGOS = tuple(cls.SECTION for cls in METHODS)
"""The built-in methods (plugins add to :data:`ALGO_CONFIGS`, the registered ones)."""
SEQUENCE_ALGOS = tuple(cls.SECTION for cls in METHODS if cls.METHOD.family == "sequence")
"""The built-in sequence family (trained on windows of sessions, acting with a per-user context)."""
TD_ALGOS = tuple(name for name in ALGOS if name not in SEQUENCE_ALGOS)
"""The built-in TD family (trained on transitions, acting from the current state)."""


def family(name: str) -> str:
    """``td`` or ``sequence``: the family of registered method ``name``."""
    return str(ALGO_CONFIGS[name].METHOD.family)


def algo_class(name: str) -> type[OfflineAlgo]:
    """The class of offline algorithm ``name`` (its registration's ``algo``), checked to be of its family."""
    method = ALGO_CONFIGS[name].METHOD
    cls = resolve_object(method.algo, f"{ALGO_CONFIGS[name].__name__}.METHOD.algo")
    base = SequenceAlgo if method.family == "sequence" else OfflineAlgo
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{method.algo} (offline method {name}) is not a {base.__name__}")
    return cls


def make_algo(name: str, obs_dim: int, action_center: Tensor, action_scale: Tensor, gamma: float,
              total_steps: int, configs: dict[str, Any] | None = None, session: SessionSpec | None = None
              ) -> OfflineAlgo:
    """Build algorithm ``name`` with its config from ``configs`` (defaults when absent).

    ``total_steps`` is the number of updates of the run (IQL's cosine actor schedule); ``session``
    describes the sessions a sequence method trains on and acts in (defaults: 100 steps, 1000
    items, slates of 10).
    """
    if name not in ALGO_CONFIGS:
        raise ConfigError(f"unknown offline algorithm {name!r}; choose one of {', '.join(ALGO_CONFIGS)} (or register "
                          "it: README, 'Adding a method, an agent or an environment')")
    config = (configs or {}).get(name) or ALGO_CONFIGS[name]()
    if not isinstance(config, ALGO_CONFIGS[name]):
        raise ConfigError(f"the config of {name} must be a {ALGO_CONFIGS[name].__name__}, got {type(config).__name__}")
    cls: Any = algo_class(name)
    if family(name) == "sequence":
        algo: OfflineAlgo = cls(obs_dim, action_center, action_scale, gamma, total_steps, config, session)
    else:
        algo = cls(obs_dim, action_center, action_scale, gamma, total_steps, config)
    return algo


def algo_from_policy(path: str | os.PathLike[str], action_center: Tensor, action_scale: Tensor,
                     encoder: BeliefEncoder, session: SessionSpec | None = None,
                     overrides: dict[str, Any] | None = None) -> tuple[OfflineAlgo, Normalizer, dict[str, Any]]:
    """The trained offline algorithm a policy file holds, rebuilt from the settings stored in it (method, its
    config, gamma, number of updates) and loaded on ``action_center``'s device, with its state normaliser and the
    file's metadata; ``encoder`` (the state encoder it acts through) gets the saved encoder's weights. The caller
    gives what is not the policy's: the action box of its decoder and the sessions it acts in. ``overrides``:
    config fields to change (e.g. DD's ``sampling_steps``)."""
    p = Path(path)
    payload, meta = read_policy(p)
    name = payload.get("algo")
    if name not in ALGO_CONFIGS:
        raise ArtifactError(f"{p}: field 'algo' is {name!r}; expected one of {', '.join(ALGO_CONFIGS)} (a method "
                            "of a plugin: load it with $SLATE_RL_PLUGINS)")
    try:
        settings, gamma, total_steps = meta["algo_config"], meta["offline"]["gamma"], meta["offline"]["total_steps"]
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{p}: field 'meta' lacks the training settings ({exc}); retrain the policy") from exc
    config: Any = from_dict(ALGO_CONFIGS[name], {**settings, **(overrides or {})}, f"{p}: algo_config")
    device = action_center.device
    normalizer = Normalizer(payload["normalizer"]["mean"].shape[0]).to(device)
    algo = make_algo(name, normalizer.mean.shape[0], action_center, action_scale, gamma, total_steps,
                     {name: config}, session).to(device)
    load_policy(p, algo, normalizer, encoder)
    return algo, normalizer, meta
