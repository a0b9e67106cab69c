"""What the pipeline needs from a simulator, and the one factory that builds one.

Every stage (logs, reference policies, online training, dataset collection, offline evaluation) talks to
the simulator through :class:`Simulator` only: batched ``reset``/``step`` over user keys, the item table
and the sizes in its config. :class:`~slate_rl.sim.core.TopicRec` implements it; another simulator is a
config dataclass (torch-free, so that ``snakemake -n`` needs no torch when its module imports none) whose
``SIMULATOR`` class variable names the simulator class as ``"module:Class"``, e.g.::

    environments:
      my_env: {simulator: "my_package.sim:MyConfig", num_items: 500}

:func:`make_simulator` is the one constructor; ``make_env_config`` (:mod:`slate_rl.sim.config`) resolves an
environment entry to its config. A simulator that is not TopicRec gets its item table from the pipeline's
table kinds (``embeddings``: ``focused`` or ``diffuse``, ``num_topics`` x ``topic_size`` wide). Privileged
agents need more: every item's relevance at the next step (:class:`PrivilegedSimulator`); SlateQ's target
uses TopicRec's own click model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from slate_rl.core.config import resolve_object
from slate_rl.core.device import resolve_device
from slate_rl.core.errors import ConfigError
from slate_rl.core.io import file_sha256
from slate_rl.sim.config import SimulatorConfig, make_env_config
from slate_rl.sim.core import StepResult
from slate_rl.sim.embeddings import default_embeddings_seed, generate_item_embeddings, load_item_embeddings


@runtime_checkable
class Simulator(Protocol):
    """A batched slate simulator.

    ``reset(keys)`` starts one session per user key (a user's whole randomness is its key, so a session does
    not depend on the batch it shares) and shows the initial slate; ``step(state, slates)`` shows one slate
    (B, k) of item ids per user, ``-1`` marking a slot the simulator fills with its oracle's item of that rank.
    Both return the new state and a :class:`~slate_rl.sim.core.StepResult` (slate shown, clicks, reward =
    number of clicks, ``truncated`` at ``episode_length``, and the privileged fields). The state is the
    simulator's own; the pipeline reads only its ``t``, the (B,) steps taken since reset (and SlateQ its ``user``).
    """

    config: Any
    """The :class:`~slate_rl.sim.config.SimulatorConfig` it was built from."""
    device: torch.device
    """Where every tensor lives."""
    items: Tensor
    """(num_items, embedding_dim) float32 item table (SAC+TopK(ideal) and WkNN act with it)."""

    def reset(self, key: Tensor) -> tuple[Any, StepResult]:
        """New users with keys ``key`` (B,) int64: their state and the initial slate's result."""
        ...

    def step(self, state: Any, slate: Tensor, validate: bool = True) -> tuple[Any, StepResult]:
        """Show ``slate`` (B, k) to every user; ``validate``: check the shape and the ids first."""
        ...


@runtime_checkable
class PrivilegedSimulator(Simulator, Protocol):
    """A simulator that also tells every item's relevance at the next step (privileged agents: SlateQ)."""

    def next_relevance(self, state: Any) -> Tensor:
        """Relevance of every item (B, num_items) at each user's next step."""
        ...


def simulator_class(config: Any) -> type:
    """The simulator class ``config``'s ``SIMULATOR`` names."""
    spec = getattr(type(config), "SIMULATOR", None)
    if not isinstance(spec, str):
        raise ConfigError(f"{type(config).__name__} names no simulator: give it a class variable "
                          "SIMULATOR = 'module:Class'")
    return resolve_object(spec, f"{type(config).__name__}.SIMULATOR")


def item_table(config: Any, item_embeddings: np.ndarray | Tensor | str | os.PathLike[str] | None = None,
               embeddings_seed: int | None = None) -> tuple[np.ndarray | Tensor, dict[str, Any]]:
    """The item table of environment ``config`` and a description of it (recorded in artifacts): a given array,
    a ``.npy``/``.pt`` file, or (``None``) the table of the environment's kind generated from ``embeddings_seed``
    (default: the kind's seed)."""
    if item_embeddings is None:
        seed = default_embeddings_seed(config.embeddings) if embeddings_seed is None else embeddings_seed
        table = generate_item_embeddings(config.embeddings, seed, config.num_items, config.num_topics,
                                         config.topic_size)
        return table, {"generated": config.embeddings, "seed": seed}
    if isinstance(item_embeddings, str | os.PathLike):
        table = load_item_embeddings(item_embeddings, config.num_items, config.embedding_dim)
        return table, {"file": str(item_embeddings), "sha256": file_sha256(item_embeddings)}
    return item_embeddings, {"array": list(item_embeddings.shape)}


def make_simulator(env: str | SimulatorConfig | Mapping[str, Any] = "focused_topdown",
                   item_embeddings: np.ndarray | Tensor | str | os.PathLike[str] | None = None,
                   embeddings_seed: int | None = None, device: torch.device | str = "cpu") -> Simulator:
    """The one constructor of a simulator: the environment ``env`` (a preset name, a
    :class:`~slate_rl.sim.config.SimulatorConfig`, or the mapping of its fields as datasets record it in
    ``env_config``, where a ``simulator`` key names another simulator's config class) over the item table
    :func:`item_table` gives for ``item_embeddings``/``embeddings_seed``, on ``device`` (``auto``: CUDA when
    available)."""
    if isinstance(env, str):
        config: Any = make_env_config(env)
    elif isinstance(env, Mapping):
        config = make_env_config("env", {"env": env})
    else:
        config = env
    cls = simulator_class(config)
    table, _ = item_table(config, item_embeddings, embeddings_seed)
    sim = cls(config, torch.as_tensor(table), resolve_device(device))
    if not isinstance(sim, Simulator):
        raise ConfigError(f"{type(config).SIMULATOR} does not implement slate_rl.sim.protocol.Simulator "
                          "(config, device, items, reset, step)")
    return sim


def privileged(sim: Simulator, who: str) -> PrivilegedSimulator:
    """``sim`` as a :class:`PrivilegedSimulator`, or one error naming ``who`` needs it."""
    if not isinstance(sim, PrivilegedSimulator):
        raise ConfigError(f"{who} needs the simulator's relevances (next_relevance), which {type(sim).__name__} "
                          "does not expose; use another agent")
    return sim
