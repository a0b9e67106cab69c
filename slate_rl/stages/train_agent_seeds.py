"""``train-agent --seeds 0,1,2``: train several seeds of one SAC agent together in one process
(:mod:`slate_rl.online.multiseed`), writing for every seed exactly the files ``train-agent --seed s``
writes: ``--output-dir`` and ``--results`` hold ``{seed}`` (e.g. ``data/agents/e/a/seed{seed}`` and
``results/e/online/a/seed{seed}.json``), each seed's directory gets its best/medium/last checkpoints
and each results JSON its test return, learning curve and metadata (``"seed": s``; the group is named in
the ``.timings.json`` beside it). Resume: one ``last.work.ckpt`` per seed; the group resumes
only when every seed's checkpoint fits. Agents other than plain SAC (sac_gems_*, sac_topk_*,
sac_kargmax) are refused with a ConfigError. Also :func:`save_medium`, the stage's medium checkpoint for one
seed or many.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slate_rl.core.artifacts import agent_section
from slate_rl.core.config import from_namespace, to_dict
from slate_rl.core.errors import ArtifactError
from slate_rl.core.io import copy_file, fingerprint, remove_stale_temp_files, write_json, write_timings
from slate_rl.core.logger import RunLogger
from slate_rl.core.stats import mean_ci
from slate_rl.online.base import Agent
from slate_rl.online.config import AgentBuildConfig
from slate_rl.online.loop import LoopState, OnlineConfig, evaluate
from slate_rl.online.multiseed import check_stackable, train_seeds
from slate_rl.online.registry import agent_variant, build_agent, load_agent, parse_agent_tag, save_agent
from slate_rl.online.reinforce import ReinforceConfig
from slate_rl.online.sac import SACConfig
from slate_rl.online.slateq import ClickModel, SlateQConfig
from slate_rl.sim.embeddings import load_item_embeddings
from slate_rl.stages.common import agent_gems, input_hashes, parse_seeds, per_seed_path, simulator_from_args


def agent_settings(args: argparse.Namespace
                   ) -> tuple[OnlineConfig, AgentBuildConfig, SACConfig, ReinforceConfig, SlateQConfig]:
    """The loop's and the agents' config sections from train-agent's options."""
    return (from_namespace(OnlineConfig, args), from_namespace(AgentBuildConfig, args), from_namespace(SACConfig, args),
            from_namespace(ReinforceConfig, args, prefix="reinforce_"),
            from_namespace(SlateQConfig, args, prefix="slateq_"))


def run_meta(args: argparse.Namespace, agent: Agent, seed: int, env_config: dict[str, Any],
             online: OnlineConfig) -> dict[str, Any]:
    """The metadata of one seed's run (checkpoints, results JSON, logger; without ``online.total_steps``, its
    resume fingerprint). It holds the config section of its own agent only (``agent.build``,
    :func:`~slate_rl.core.artifacts.agent_section`): another agent's settings do not discard a resume."""
    section = agent_section(args.agent)
    return {"env": args.env, "env_config": env_config, "agent": args.agent, "variant": agent_variant(args.agent),
            "belief_table": agent.build["belief_table"], "seed": seed,
            "online": to_dict(online), section: agent.build[section], "gems_tag": parse_agent_tag(args.agent)[1],
            "inputs": input_hashes(embeddings=args.embeddings_file, gems=args.gems, mf=args.mf)}


def run(args: argparse.Namespace) -> None:
    seeds = parse_seeds(args.seeds)
    online, build, sac, reinforce, slateq = agent_settings(args)
    kind, _ = parse_agent_tag(args.agent)
    outs = [per_seed_path(args.output_dir, s, "--output-dir") for s in seeds]
    results = [per_seed_path(args.results, s, "--results") for s in seeds]
    sim, table_source = simulator_from_args(args)
    c = sim.config
    gems = agent_gems(args, sim)
    mf = (torch.from_numpy(load_item_embeddings(args.mf, c.num_items, c.embedding_dim, nonnegative=False))
          .to(sim.device) if args.mf else None)
    agents: list[Agent] = []
    for s in seeds:  # each seed's initial networks are those of a single-seed run
        torch.manual_seed(s)
        agent = build_agent(args.agent, sim.items, c.num_items, c.slate_size, c.episode_length, gems, mf, sac,
                            reinforce, slateq, build.belief_table, ClickModel.of(sim))
        agents.append(check_stackable(agent))
    metas: list[dict[str, Any]] = []
    prints: list[str] = []
    resumes: list[Path] = []
    for s, out in zip(seeds, outs, strict=True):
        out.mkdir(parents=True, exist_ok=True)
        meta = run_meta(args, agents[0], s, to_dict(c), online)
        metas.append(meta)
        settings = {k: v for k, v in meta.items() if k != "online"}
        settings["online"] = {k: v for k, v in meta["online"].items() if k != "total_steps"}
        prints.append(fingerprint(settings))
        resume, last = out / "last.work.ckpt", out / "last.ckpt"
        remove_stale_temp_files(resume)
        if last.is_file() and not resume.is_file():
            os.replace(last, resume)
        resumes.append(resume)

    def save_best(i: int, a: Agent, state: LoopState) -> None:
        save_agent(outs[i] / "best.work.ckpt", a, args.agent, {**metas[i], "step": state.step,
                                                               "val_return": state.best_val})

    logger = RunLogger(f"{args.agent}-{args.env}-seeds{'_'.join(map(str, seeds))}", {**metas[0], "seeds": seeds},
                       args.logger_mode, group=args.env)
    start = time.perf_counter()
    states = train_seeds(sim, agents, online, seeds, save_best, resumes, logger, progress=not args.no_progress,
                         fingerprints=prints)
    elapsed = time.perf_counter() - start
    logger.finish()
    for i, (s, out, agent, state, meta) in enumerate(zip(seeds, outs, agents, states, metas, strict=True)):
        medium = save_medium(out / "medium.ckpt", agent, args.agent, meta, state)
        load_agent(out / "best.work.ckpt", agent, args.agent)
        returns = evaluate(sim, agent, args.test_seed, args.test_sessions).cpu().numpy()
        stats = mean_ci(returns)
        copy_file(out / "best.work.ckpt", out / "best.ckpt")
        write_json(results[i], {
            **meta,
            "return_mean": stats["mean"], "return_std": stats["std"], "return_ci95": stats["ci"],
            "n_sessions": stats["n"], "test_seed": args.test_seed, "best_step": state.best_step,
            "best_val_return": state.best_val, "learning_curve": state.curve, "medium_step": medium[0],
            "medium_val_return": medium[1], "device": str(sim.device), "item_embeddings": table_source,
            "returns": np.round(returns, 3).tolist(),
        })
        write_timings(results[i], train_seconds=elapsed, device=str(sim.device),
                      seeds_trained_together=",".join(map(str, seeds)))
        print(f"wrote {results[i]}: seed {s} test return {stats['mean']:.2f} +- {stats['ci']:.2f} "
              f"(best validation {state.best_val:.2f} at step {state.best_step})")
    # Only once every seed is tested: a job killed while testing keeps every seed's resume state (Snakemake deletes
    # the outputs of a failed job, last.ckpt included), so that its rerun resumes the whole group.
    for resume, out in zip(resumes, outs, strict=True):
        os.replace(resume, out / "last.ckpt")
    print(f"{len(seeds)} seeds trained together in {elapsed:.0f} s on {sim.device}")


def save_medium(path: Path, agent: Agent, tag: str, meta: dict[str, object], state: LoopState) -> tuple[int, float]:
    """Write the medium checkpoint chosen by the loop's tracker; return its step and validation return (the
    train-agent stage's, for one seed or many)."""
    assert state.medium is not None
    chosen = state.medium.choose(state.best_val)
    if chosen is None:
        raise ArtifactError(f"{path.parent / 'last.work.ckpt'}: the resumed run holds no validation snapshots (written "
                            "by an older slate_rl, before medium checkpoints); delete it and rerun the rule")
    step, val, modules = chosen
    result = torch.nn.Module.load_state_dict(agent, modules, strict=False)
    if result.unexpected_keys or any(not k.startswith("ranker.") for k in result.missing_keys):
        raise RuntimeError(f"medium snapshot does not fit the agent: {result}")
    save_agent(path, agent, tag, {**meta, "step": step, "val_return": val, "quality": "medium",
                                  "medium_fraction": state.medium.fraction, "best_val_return": state.best_val})
    return step, val
