"""Agent names, their rankers, and the agent checkpoint format.

Agent tags (the ``{agent_tag}`` of artifact paths):

=============================  ===========================================================
``sac_gems_<gems_tag>``        SAC in the latent space of a GeMS checkpoint (the paper's method)
``sac_topk_ideal``             SAC + TopK over the simulator's item table (privileged)
``sac_topk_mf``                SAC + TopK over MF item embeddings
``sac_kargmax``                SAC + kargmax over the simulator's item table (privileged)
``sac_wknn``                   SAC + Wolpertinger (k-NN refinement greedy by target Q, simulator's table)
``reinforce``                  REINFORCE + softmax over items (slate-level, no ranker)
``slateq``                     SlateQ with the simulator's true click model (privileged, no ranker)
=============================  ===========================================================

Belief encoders of SAC agents start from the ranker's item table (GeMS's learned table, MF or
the simulator's) and are trained from there; REINFORCE's and SlateQ's start random. Agent
checkpoints hold tensors and JSON metadata (``weights_only`` loading) and the ranker's action
bounds; loading an agent against a ranker with other bounds fails instead of silently losing
most of the return.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from slate_rl.core.errors import ArtifactError, ConfigError
from slate_rl.core.io import atomic_path, load_checkpoint
from slate_rl.models.gems import GEMS_TAG_WILDCARD
from slate_rl.models.rankers import GeMSRanker, KArgmax, Ranker, TopK
from slate_rl.online.agent import Agent
from slate_rl.online.reinforce import Reinforce, ReinforceConfig
from slate_rl.online.sac import SAC, SACConfig
from slate_rl.online.slateq import SlateQ, SlateQConfig
from slate_rl.online.wolpertinger import Wolpertinger

AGENT_TAG_WILDCARD = rf"sac_gems_{GEMS_TAG_WILDCARD}|sac_topk_ideal|sac_topk_mf|sac_kargmax|sac_wknn|reinforce|slateq"
AGENT_CKPT_FORMAT = "slate_rl.agent"
AGENT_CKPT_VERSION = 1


def parse_agent_tag(tag: str) -> tuple[str, str | None]:
    """``sac_gems_<gems_tag>`` -> ("sac_gems", gems_tag); other tags -> (tag, None)."""
    if not re.fullmatch(AGENT_TAG_WILDCARD, tag):
        raise ConfigError(
            f"unknown agent {tag!r}; choose sac_gems_<gems tag> (e.g. sac_gems_d32_beta1_lc0.5_scratch_s58407201), "
            "sac_topk_ideal, sac_topk_mf, sac_kargmax, sac_wknn, reinforce or slateq"
        )
    if tag.startswith("sac_gems_"):
        return "sac_gems", tag[len("sac_gems_"):]
    return tag, None


def make_ranker(tag: str, sim_items: Tensor, gems: GeMSRanker | None = None, mf_items: Tensor | None = None,
                slate_size: int = 10) -> tuple[Ranker | None, Tensor | None]:
    """The ranker of an agent tag and the item table its belief encoders start from."""
    kind, _ = parse_agent_tag(tag)
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
               episode_length: int = 100, slateq: SlateQConfig | None = None) -> Agent:
    kind, _ = parse_agent_tag(tag)
    if kind == "reinforce":
        return Reinforce(num_items, item_dim, slate_size, reinforce, episode_length=episode_length)
    if kind == "slateq":
        return SlateQ(num_items, item_dim, slate_size, slateq)
    if ranker is None or item_table is None:
        raise ConfigError(f"agent {tag} needs a ranker and the item table of its belief encoders (make_ranker)")
    if kind == "sac_wknn":
        if not isinstance(ranker, KArgmax):
            raise ConfigError(f"agent {tag} acts through a kargmax ranker, not {type(ranker).__name__}")
        return Wolpertinger(ranker, num_items, item_table.shape[1], slate_size, sac, item_table)
    return SAC(ranker, num_items, item_table.shape[1], slate_size, sac, item_table)


def build_agent(tag: str, sim_items: Tensor, num_items: int, slate_size: int, episode_length: int,
                gems: GeMSRanker | None = None, mf_items: Tensor | None = None, sac: SACConfig | None = None,
                reinforce: ReinforceConfig | None = None, slateq: SlateQConfig | None = None) -> Agent:
    """An untrained agent of ``tag`` with its ranker, on the device of ``sim_items``."""
    ranker, table = make_ranker(tag, sim_items, gems, mf_items, slate_size)
    agent = make_agent(tag, ranker, table, num_items, slate_size, sac, reinforce, sim_items.shape[1],
                       episode_length, slateq)
    return agent.to(sim_items.device)


def _ranker_of(agent: Agent) -> Ranker | None:
    ranker = getattr(agent, "ranker", None)
    return ranker if isinstance(ranker, Ranker) else None


def save_agent(path: str | os.PathLike[str], agent: Agent, tag: str, meta: dict[str, Any]) -> None:
    ranker = _ranker_of(agent)
    payload: dict[str, Any] = {
        "format": AGENT_CKPT_FORMAT, "version": AGENT_CKPT_VERSION, "agent": tag,
        "state": agent.state_dict(), "meta": json.dumps(meta),
    }
    if ranker is not None:
        payload["action_center"] = ranker.action_center.detach().cpu()
        payload["action_scale"] = ranker.action_scale.detach().cpu()
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_agent(path: str | os.PathLike[str], agent: Agent, tag: str) -> dict[str, Any]:
    """Load a checkpoint into ``agent`` (built with the environment's ranker); check it matches."""
    p = Path(path)
    payload = load_checkpoint(p, AGENT_CKPT_FORMAT, AGENT_CKPT_VERSION, "agent checkpoint")
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
    return json.loads(payload["meta"])
