"""Building a registered agent (:class:`~slate_rl.online.config.AgentKind`), and the agent checkpoint format.

Agents register in :mod:`slate_rl.online.config` (the built-in :data:`~slate_rl.online.config.AGENTS`, plugins'
``ONLINE_AGENTS``); :func:`build_agent` gathers the :class:`~slate_rl.online.base.AgentInputs` of a tag and calls
its kind's builder.

**Variants** of the baselines whose published code has bugs (``sac_wknn``, ``reinforce``,
``slateq``): the bare tag is the ``published`` variant (the published code's behaviour, bugs
included, so the paper's table is reproduced); the tag with the suffix ``_corrected`` (e.g.
``slateq_corrected``) is the ``corrected`` variant. config.yaml chooses per agent with
``agents.variants``; :func:`slate_rl.pipeline.agent_tags` writes the tag.

**Belief item tables** (``--belief-table``, config.yaml's ``agents.belief_table``):
``scratch`` (default, the published code): every agent's belief encoders start from one fresh
N(0, 1) item table, copied into each encoder (actor and critic own separate, equal copies),
whatever the ranker; SAC+WkNN's k-NN table is a frozen copy of it too. ``ranker``: SAC agents'
encoders start from the ranker's table (GeMS's learned table, MF or the simulator's; WkNN's
k-NN uses the simulator's table); REINFORCE's and SlateQ's start from N(0, 0.1^2). Agent
checkpoints hold tensors and JSON metadata (``weights_only`` loading) and the ranker's action
bounds; loading an agent against a ranker with other bounds fails instead of silently losing
most of the return.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slate_rl.core.checks import metadata_object, require_finite
from slate_rl.core.config import from_dict, resolve_object, to_dict
from slate_rl.core.errors import ArtifactError, ConfigError
from slate_rl.core.io import load_checkpoint, save_torch
from slate_rl.models.rankers import GeMSRanker, Ranker
from slate_rl.online.base import Agent, AgentInputs
from slate_rl.online.config import NEEDS, BeliefTable, agent_configs, agent_kind, agent_variant

AGENT_CKPT_FORMAT = "slate_rl.agent"
AGENT_CKPT_VERSION = 1


def build_agent(tag: str, sim_items: Tensor, num_items: int, slate_size: int, episode_length: int,
                gems: GeMSRanker | None = None, mf_items: Tensor | None = None, config: Any = None,
                belief_table: BeliefTable = "scratch", click_model: Any = None) -> Agent:
    """An untrained agent of ``tag`` on the device of ``sim_items``, built by its registration's builder from its
    settings (``config``: an instance of its kind's config class; ``None``: the class's defaults) and what it needs
    (``gems``, ``mf_items``, ``click_model``: :meth:`~slate_rl.online.slateq.ClickModel.of` the simulator). A
    missing need is one ConfigError naming it."""
    kind = agent_kind(tag)
    if belief_table not in ("scratch", "ranker"):
        raise ConfigError(f"belief_table must be scratch or ranker, got {belief_table!r}")
    settings = kind.config() if config is None else config
    if not isinstance(settings, kind.config):
        raise ConfigError(f"agent {tag} takes {kind.config.__name__} settings, not {type(settings).__name__}")
    variant = agent_variant(tag)
    given = {"gems": gems, "mf": mf_items, "click_model": click_model}
    # the published code's variant is the privileged one: a corrected variant needs no click model
    missing = [n for n in kind.needs if given[n] is None and (n != "click_model" or variant == "published")]
    if missing:
        raise ConfigError(f"agent {tag} needs {NEEDS[missing[0]]}")
    builder = resolve_object(kind.build, f"agent {kind.name}'s builder")
    agent = builder(AgentInputs(tag, variant, settings, sim_items, num_items, slate_size, episode_length,
                                belief_table, gems, mf_items, click_model))
    section = kind.config.SECTION  # type: ignore[attr-defined]
    agent.build = {"agent": tag, "belief_table": belief_table, section: to_dict(settings)}
    return agent.to(sim_items.device)


def agent_from_checkpoint(path: str | os.PathLike[str], sim_items: Tensor, num_items: int, slate_size: int,
                          episode_length: int, gems: GeMSRanker | None = None, mf_items: Tensor | None = None,
                          click_model: Any = None) -> tuple[Agent, dict[str, Any]]:
    """The agent a checkpoint holds, rebuilt from the settings stored in it (tag, its config section, belief
    table) and loaded; and the checkpoint's metadata. The caller gives only what is not the agent's: the
    simulator's table and the ranker's artifact (``gems``/``mf_items``)."""
    p = Path(path)
    payload = load_checkpoint(p, AGENT_CKPT_FORMAT, AGENT_CKPT_VERSION, "agent checkpoint")
    meta = metadata_object(payload["meta"], p, "meta")
    build: dict[str, Any] = metadata_object(payload["build"], p, "build") if "build" in payload else \
        {k: meta[k] for k in ("belief_table", *agent_configs()) if k in meta}  # before "build"
    tag = payload.get("agent")
    if not isinstance(tag, str):
        raise ArtifactError(f"{p}: field 'agent' missing; this is not an agent checkpoint")
    cls = agent_kind(tag).config
    section = cls.SECTION  # type: ignore[attr-defined]
    config = from_dict(cls, build[section], prefix=f"{p}: build.{section}") if section in build else None
    belief_table = build.get("belief_table", "scratch")
    agent = build_agent(tag, sim_items, num_items, slate_size, episode_length, gems, mf_items, config,
                        belief_table, click_model)
    ranker = _ranker_of(agent)
    if ranker is not None and agent.own_ranker:
        # the ranker is the agent's own (SAC+WkNN's k-NN table, a frozen copy of its scratch table), not an
        # artifact given by the caller: it comes from the checkpoint, like the rest of the agent
        own = {k[len("ranker."):]: v for k, v in payload["state"].get("modules", {}).items()
               if k.startswith("ranker.")}
        ranker.load_state_dict(own)
    _load_into(p, payload, agent, tag)
    return agent, meta


def _ranker_of(agent: Agent) -> Ranker | None:
    ranker = getattr(agent, "ranker", None)
    return ranker if isinstance(ranker, Ranker) else None


def save_agent(path: str | os.PathLike[str], agent: Agent, tag: str, meta: dict[str, Any]) -> None:
    ranker = _ranker_of(agent)
    payload: dict[str, Any] = {
        "format": AGENT_CKPT_FORMAT, "version": AGENT_CKPT_VERSION, "agent": tag,
        "state": agent.state_dict(), "meta": json.dumps(meta), "build": json.dumps(agent.build),
    }
    if ranker is not None:
        payload["action_center"] = ranker.action_center.detach().cpu()
        payload["action_scale"] = ranker.action_scale.detach().cpu()
    require_finite(path, f"agent {tag}", payload)
    save_torch(path, payload)


def load_agent(path: str | os.PathLike[str], agent: Agent, tag: str) -> dict[str, Any]:
    """Load a checkpoint into ``agent`` (built with the environment's ranker); check it matches."""
    p = Path(path)
    payload = load_checkpoint(p, AGENT_CKPT_FORMAT, AGENT_CKPT_VERSION, "agent checkpoint")
    _load_into(p, payload, agent, tag)
    return metadata_object(payload["meta"], p, "meta")


def _load_into(p: Path, payload: dict[str, Any], agent: Agent, tag: str) -> None:
    """Load a checkpoint's payload into ``agent``; every mismatch is an ArtifactError naming the field."""
    if payload.get("agent") != tag:
        raise ArtifactError(f"{p}: field 'agent' is {payload.get('agent')!r}, expected {tag!r}")
    ranker = _ranker_of(agent)
    for field in ("action_center", "action_scale") if ranker is not None else ():
        if field not in payload:
            raise ArtifactError(f"{p}: missing field {field!r} (the ranker's bounds); rebuild the checkpoint")
        saved, expected = payload[field], getattr(ranker, field).cpu()
        if saved.shape != expected.shape or not torch.allclose(saved, expected, atol=1e-6):
            raise ArtifactError(
                f"{p}: field {field!r} does not match the ranker's bounds (saved {tuple(saved.shape)} values, "
                f"ranker {tuple(expected.shape)}); the agent was trained with another GeMS/ranker: use that one"
            )
    if ranker is not None:  # the frozen ranker (e.g. the GeMS decoder) must be the one the agent was trained with
        saved_modules = payload["state"].get("modules", {})
        for key, value in nn.Module.state_dict(agent).items():
            if key.startswith("ranker.") and key in saved_modules and not torch.equal(saved_modules[key].cpu(),
                                                                                       value.cpu()):
                raise ArtifactError(f"{p}: field 'state.modules.{key}' differs from the ranker given (--gems/--mf): "
                                    "the agent was trained with another ranker; use that one")
    try:
        agent.load_state_dict(payload["state"])
    except (RuntimeError, KeyError) as exc:
        raise ArtifactError(f"{p}: field 'state' does not fit this agent ({exc})") from exc
