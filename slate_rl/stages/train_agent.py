"""Stage ``train-agent``: train an online agent in the simulator and test its best checkpoint.

Writes ``<output-dir>/best.ckpt`` (best validation), ``<output-dir>/medium.ckpt`` (the
validation snapshot closest to ``medium_fraction`` x the best validation return: the behaviour
of "medium" offline datasets), ``<output-dir>/last.ckpt`` (the final training state: agent,
optimisers, replay buffer, counters; the source of "replay" offline datasets), the results
JSON (test return on the fixed test users, learning curve, input hashes) and, beside it, a
``.timings.json``.

While training, the resume state is ``<output-dir>/last.work.ckpt`` (not a Snakemake output, so
it survives a failed job); it becomes ``last.ckpt`` at the end. A rerun resumes from it, or
from ``last.ckpt`` (to extend a finished run to a larger ``--total-steps``), when it was
written with the same inputs, environment and settings; otherwise training starts over.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from slate_rl.core.artifacts import TEST_SEED, TEST_SESSIONS
from slate_rl.core.config import add_arguments as add_config_arguments
from slate_rl.core.config import to_dict
from slate_rl.core.errors import ConfigError
from slate_rl.core.io import copy_file, fingerprint, remove_stale_temp_files, write_json, write_timings
from slate_rl.core.logger import RunLogger
from slate_rl.core.stats import mean_ci
from slate_rl.online.base import Agent
from slate_rl.online.config import AgentBuildConfig
from slate_rl.online.loop import LoopState, OnlineConfig, evaluate, train_online
from slate_rl.online.registry import build_agent, load_agent, parse_agent_tag, save_agent
from slate_rl.online.reinforce import ReinforceConfig
from slate_rl.online.sac import SACConfig
from slate_rl.online.slateq import ClickModel, SlateQConfig
from slate_rl.sim.embeddings import load_item_embeddings
from slate_rl.stages import train_agent_seeds
from slate_rl.stages.common import (
    add_env_arguments,
    add_training_arguments,
    agent_gems,
    simulator_from_args,
    size_int,
)
from slate_rl.stages.train_agent_seeds import agent_settings, run_meta, save_medium

NAME = "train-agent"
HELP = "train an online agent (SAC+GeMS/TopK/kargmax/WkNN, REINFORCE, SlateQ) and test it (data/agents, results)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_env_arguments(parser, embeddings_required=True, device=False)
    parser.add_argument("--agent", required=True, help="agent tag, e.g. sac_gems_d32_beta1_lc0.5_scratch_s58407201, "
                        "sac_topk_ideal, sac_topk_mf, sac_kargmax, sac_wknn, reinforce, slateq; "
                        "sac_wknn/reinforce/slateq are the published variants, <tag>_corrected the corrected ones")
    parser.add_argument("--gems", default=None, help="GeMS checkpoint (sac_gems_* agents)")
    parser.add_argument("--mf", default=None, help="MF item embeddings .npy (sac_topk_mf)")
    parser.add_argument("--seed", type=int, default=None, help="training seed (users, networks, sampling)")
    parser.add_argument("--seeds", default=None,
                        help="instead of --seed: comma-separated seeds of a plain SAC agent trained together in one "
                        "process, each writing the files of a --seed run; --output-dir and --results then contain "
                        "{seed}")
    parser.add_argument("--test-seed", type=int, default=TEST_SEED, help="seed of the fixed test users")
    parser.add_argument("--test-sessions", type=size_int("test_sessions"), default=TEST_SESSIONS, help="test users")
    add_config_arguments(parser, OnlineConfig)
    add_config_arguments(parser, AgentBuildConfig)
    add_config_arguments(parser, SACConfig)
    add_config_arguments(parser, ReinforceConfig, prefix="reinforce_")
    add_config_arguments(parser, SlateQConfig, prefix="slateq_")
    add_training_arguments(parser)
    parser.add_argument("--output-dir", required=True, help="directory of best.ckpt and last.ckpt")
    parser.add_argument("--results", required=True, help="destination results .json")


def run(args: argparse.Namespace) -> None:
    if (args.seed is None) == (args.seeds is None):
        raise ConfigError("train-agent needs exactly one of --seed and --seeds")
    if args.seeds is not None:
        train_agent_seeds.run(args)
        return
    online, build, sac, reinforce, slateq = agent_settings(args)
    kind, _ = parse_agent_tag(args.agent)
    sim, table_source = simulator_from_args(args)
    c = sim.config
    gems = agent_gems(args, sim)
    mf = (torch.from_numpy(load_item_embeddings(args.mf, c.num_items, c.embedding_dim, nonnegative=False))
          .to(sim.device)
          if args.mf else None)
    torch.manual_seed(args.seed)
    agent = build_agent(args.agent, sim.items, c.num_items, c.slate_size, c.episode_length, gems, mf, sac,
                        reinforce, slateq, build.belief_table, ClickModel.of(sim))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    best_work = out / "best.work.ckpt"  # not a Snakemake output, so it survives a failed job
    meta = run_meta(args, agent, args.seed, to_dict(c), online)

    def save_best(a: Agent, state: LoopState) -> None:
        save_agent(best_work, a, args.agent, {**meta, "step": state.step, "val_return": state.best_val})

    logger = RunLogger(f"{args.agent}-{args.env}-seed{args.seed}", meta, args.logger_mode, group=args.env)
    start = time.perf_counter()
    # Everything that shapes training: inputs, every environment parameter, agent settings and the
    # schedule, except total_steps (a finished run may be extended; a shorter one starts over).
    settings = {k: v for k, v in meta.items() if k != "online"}
    settings["online"] = {k: v for k, v in meta["online"].items() if k != "total_steps"}
    resume, last = out / "last.work.ckpt", out / "last.ckpt"
    remove_stale_temp_files(resume)
    if last.is_file() and not resume.is_file():
        os.replace(last, resume)
    state = train_online(sim, agent, online, args.seed, save_best, resume, logger,
                         progress=not args.no_progress, fingerprint=fingerprint(settings))
    elapsed = time.perf_counter() - start
    logger.finish()
    medium = save_medium(out / "medium.ckpt", agent, args.agent, meta, state)
    load_agent(best_work, agent, args.agent)
    returns = evaluate(sim, agent, args.test_seed, args.test_sessions).cpu().numpy()
    stats = mean_ci(returns)
    copy_file(best_work, out / "best.ckpt")
    write_json(args.results, {
        **meta,
        "return_mean": stats["mean"], "return_std": stats["std"], "return_ci95": stats["ci"], "n_sessions": stats["n"],
        "test_seed": args.test_seed, "best_step": state.best_step, "best_val_return": state.best_val,
        "learning_curve": state.curve, "medium_step": medium[0], "medium_val_return": medium[1],
        "device": str(sim.device), "item_embeddings": table_source, "returns": np.round(returns, 3).tolist(),
    })
    write_timings(args.results, train_seconds=elapsed, device=str(sim.device))
    os.replace(resume, last)
    print(f"wrote {args.results}: test return {stats['mean']:.2f} +- {stats['ci']:.2f} "
          f"(best validation {state.best_val:.2f} at step {state.best_step}), {elapsed:.0f} s on {sim.device}")
