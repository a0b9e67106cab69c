"""Agent builders, their rankers, and the agent checkpoint format.

Agent tags and their grammar (``sac_gems_<gems_tag>``, ``<base>[_corrected]``...) are facts of
:mod:`slate_rl.core.artifacts`; this module builds the agent a tag names.

**Variants** of the baselines whose published code has bugs (``sac_wknn``, ``reinforce``,
``slateq``): the bare tag is the ``published`` variant (the published code's behaviour, bugs
included, so the paper's table is reproduced); the tag with the suffix ``_corrected`` (e.g.
``slateq_corrected``) is the ``corrected`` variant. Grammar: ``<base>[_corrected]``, where the
suffix is allowed on those three bases only (:data:`VARIANT_AGENTS`). config.yaml chooses per
agent with ``agents.variants``; :func:`slate_rl.pipeline.agent_tags` writes the tag.

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

from slate_rl.core.artifacts import agent_section, agent_variant, parse_agent_tag
from slate_rl.core.checks import metadata_object, require_finite
from slate_rl.core.config import from_dict, to_dict
from slate_rl.core.errors import ArtifactError, ConfigError
from slate_rl.core.io import load_checkpoint, save_torch
from slate_rl.models.belief import scratch_item_table
from slate_rl.models.rankers import GeMSRanker, KArgmax, Ranker, TopK
from slate_rl.online.base import Agent
from slate_rl.online.config import BeliefTable
from slate_rl.online.reinforce import Reinforce, ReinforceConfig
from slate_rl.online.sac import SAC, SACConfig
from slate_rl.online.slateq import ClickModel, SlateQ, SlateQConfig
from slate_rl.online.wolpertinger import Wolpertinger

AGENT_CKPT_FORMAT = "slate_rl.agent"
AGENT_CKPT_VERSION = 1


def make_ranker(tag: str, sim_items: Tensor, gems: GeMSRanker | None = None, mf_items: Tensor | None = None,
                slate_size: int = 10, belief_table: BeliefTable = "ranker") -> tuple[Ranker | None, Tensor | None]:
    """The ranker of an agent tag and the item table its belief encoders start from.

    ``belief_table="scratch"``: the table is a fresh N(0, 1) draw (torch's global generator), whatever the
    ranker; SAC+WkNN's k-NN ranker then works over a frozen copy of it (the published code)."""
    kind, _ = parse_agent_tag(tag)
    if belief_table not in ("scratch", "ranker"):
        raise ConfigError(f"belief_table must be scratch or ranker, got {belief_table!r}")
    if belief_table == "scratch":
        scratch = scratch_item_table(sim_items.shape[0], sim_items.shape[1], sim_items.device)
        if kind in ("reinforce", "slateq"):
            return None, scratch
        if kind == "sac_wknn":
            return KArgmax(scratch.clone(), slate_size), scratch
        ranker, _ = make_ranker(tag, sim_items, gems, mf_items, slate_size, "ranker")
        return ranker, scratch
    if kind in ("reinforce", "slateq"):
        return None, None
    if kind == "sac_gems":
        if gems is None:
            raise ConfigError(f"agent {tag} needs a GeMS checkpoint (--gems)")
        return gems, gems.gems.items.weight.detach().clone()
    if kind == "sac_topk_mf":
        if mf_items is None:
            raise ConfigError(f"agent {tag} needs MF item embeddings (--mf)")
        return TopK(mf_items, slate_size), mf_items
    if kind == "sac_topk_ideal":
        return TopK(sim_items, slate_size), sim_items
    return KArgmax(sim_items, slate_size), sim_items  # sac_kargmax and sac_wknn


def make_agent(tag: str, ranker: Ranker | None, item_table: Tensor | None, num_items: int, slate_size: int,
               sac: SACConfig | None = None, reinforce: ReinforceConfig | None = None, item_dim: int = 20,
               episode_length: int = 100, slateq: SlateQConfig | None = None,
               click_model: ClickModel | None = None) -> Agent:
    """The agent of ``tag`` (its variant from the tag's suffix). The published SlateQ needs ``click_model``."""
    kind, _ = parse_agent_tag(tag)
    variant = agent_variant(tag)
    if kind == "reinforce":
        return Reinforce(num_items, item_dim, slate_size, reinforce, item_table, episode_length, variant)
    if kind == "slateq":
        return SlateQ(num_items, item_dim, slate_size, slateq, item_table, variant, click_model, episode_length)
    if ranker is None or item_table is None:
        raise ConfigError(f"agent {tag} needs a ranker and the item table of its belief encoders (make_ranker)")
    if kind == "sac_wknn":
        if not isinstance(ranker, KArgmax):
            raise ConfigError(f"agent {tag} acts through a kargmax ranker, not {type(ranker).__name__}")
        return Wolpertinger(ranker, num_items, item_table.shape[1], slate_size, sac, item_table, variant=variant)
    return SAC(ranker, num_items, item_table.shape[1], slate_size, sac, item_table)


def build_agent(tag: str, sim_items: Tensor, num_items: int, slate_size: int, episode_length: int,
                gems: GeMSRanker | None = None, mf_items: Tensor | None = None, sac: SACConfig | None = None,
                reinforce: ReinforceConfig | None = None, slateq: SlateQConfig | None = None,
                belief_table: BeliefTable = "scratch", click_model: ClickModel | None = None) -> Agent:
    """An untrained agent of ``tag`` with its ranker, on the device of ``sim_items``
    (``click_model``: :meth:`ClickModel.of` the simulator, needed by the published SlateQ)."""
    ranker, table = make_ranker(tag, sim_items, gems, mf_items, slate_size, belief_table)
    agent = make_agent(tag, ranker, table, num_items, slate_size, sac, reinforce, sim_items.shape[1],
                       episode_length, slateq, click_model)
    section = agent_section(tag)
    settings = {"reinforce": reinforce or ReinforceConfig(), "slateq": slateq or SlateQConfig(),
                "sac": sac or SACConfig()}[section]
    agent.build = {"agent": tag, "belief_table": belief_table, section: to_dict(settings)}
    return agent.to(sim_items.device)


def agent_from_checkpoint(path: str | os.PathLike[str], sim_items: Tensor, num_items: int, slate_size: int,
                          episode_length: int, gems: GeMSRanker | None = None, mf_items: Tensor | None = None,
                          click_model: ClickModel | None = None) -> tuple[Agent, dict[str, Any]]:
    """The agent a checkpoint holds, rebuilt from the settings stored in it (tag, its config section, belief
    table) and loaded; and the checkpoint's metadata. The caller gives only what is not the agent's: the
    simulator's table and the ranker's artifact (``gems``/``mf_items``)."""
    p = Path(path)
    payload = load_checkpoint(p, AGENT_CKPT_FORMAT, AGENT_CKPT_VERSION, "agent checkpoint")
    meta = metadata_object(payload["meta"], p, "meta")
    build: dict[str, Any] = metadata_object(payload["build"], p, "build") if "build" in payload else \
        {k: meta[k] for k in ("belief_table", "sac", "reinforce", "slateq") if k in meta}  # before "build"
    tag = payload.get("agent")
    if not isinstance(tag, str):
        raise ArtifactError(f"{p}: field 'agent' missing; this is not an agent checkpoint")
    configs: dict[str, Any] = {name: from_dict(cls, build[name], prefix=f"{p}: build.{name}")
               for name, cls in (("sac", SACConfig), ("reinforce", ReinforceConfig), ("slateq", SlateQConfig))
               if name in build}
    belief_table = build.get("belief_table", "scratch")
    agent = build_agent(tag, sim_items, num_items, slate_size, episode_length, gems, mf_items,
                        belief_table=belief_table, click_model=click_model, **configs)
    ranker = _ranker_of(agent)
    if ranker is not None and parse_agent_tag(tag)[0] == "sac_wknn" and belief_table == "scratch":
        # the k-NN table is the agent's own (a frozen copy of its scratch table), not an artifact given by the
        # caller: it comes from the checkpoint, like the rest of the agent
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
