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

``--seeds 0,1,2`` instead of ``--seed``: ``--output-dir`` and ``--results`` hold ``{seed}`` and every
seed gets exactly the files of a ``--seed`` run (``"seed": s`` in its metadata). Every agent trains in
the one loop, :func:`~slate_rl.online.loop.train_seeds`: a plain SAC agent with a ranker (sac_gems_*,
sac_topk_*, sac_kargmax) with all its seeds together, their networks stacked (the group named in each
``.timings.json``); any other agent one seed after another (the same bytes as ``--seed``). Each seed
draws from its own streams, so its run does not depend on the seeds beside it (up to float rounding).
Each ``last.work.ckpt`` becomes ``last.ckpt`` only once every seed is tested, so a group killed while
testing resumes whole.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slate_rl.core.artifacts import TEST_SEED, TEST_SESSIONS
from slate_rl.core.config import add_arguments as add_config_arguments
from slate_rl.core.config import from_namespace, to_dict
from slate_rl.core.errors import ArtifactError
from slate_rl.core.io import copy_file, fingerprint, remove_stale_temp_files, write_json, write_timings
from slate_rl.core.logger import RunLogger
from slate_rl.core.stats import mean_ci
from slate_rl.online.base import Agent
from slate_rl.online.config import (
    AgentBuildConfig,
    agent_configs,
    agent_kind,
    agent_names,
    agent_option_prefix,
    agent_section,
    agent_variant,
    parse_agent_tag,
)
from slate_rl.online.loop import LoopState, OnlineConfig, evaluate, train_seeds
from slate_rl.online.multiseed import stackable
from slate_rl.online.registry import build_agent, load_agent, save_agent
from slate_rl.online.slateq import ClickModel
from slate_rl.sim.config import env_record
from slate_rl.sim.embeddings import load_item_embeddings
from slate_rl.sim.protocol import Simulator
from slate_rl.stages.common import (
    add_env_arguments,
    add_training_arguments,
    agent_gems,
    input_hashes,
    seed_outputs,
    simulator_from_args,
    size_int,
)

NAME = "train-agent"
HELP = "train an online agent (SAC+GeMS, its baselines, registered ones) and test it (data/agents, results)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_env_arguments(parser, embeddings_required=True, device=False)
    parser.add_argument("--agent", required=True, help="agent tag (slate_rl.online.config.parse_agent_tag), e.g. "
                        "sac_gems_d32_beta1_lc0.5_scratch_s58407201 or slateq_corrected; registered agents: "
                        f"{', '.join(agent_names())}")
    parser.add_argument("--gems", default=None, help="GeMS checkpoint (agents that need GeMS: sac_gems_*)")
    parser.add_argument("--mf", default=None, help="MF item embeddings .npy (agents that need MF: sac_topk_mf)")
    parser.add_argument("--seed", type=int, default=None, help="training seed (users, networks, sampling)")
    parser.add_argument("--seeds", default=None,
                        help="instead of --seed: comma-separated seeds trained in one process (a plain SAC agent's "
                        "together, the others' one after another), each writing the files of a --seed run; "
                        "--output-dir and --results then contain {seed}")
    parser.add_argument("--test-seed", type=int, default=TEST_SEED, help="seed of the fixed test users")
    parser.add_argument("--test-sessions", type=size_int("test_sessions"), default=TEST_SESSIONS, help="test users")
    add_config_arguments(parser, OnlineConfig)
    add_config_arguments(parser, AgentBuildConfig)
    for section, cls in agent_configs().items():
        add_config_arguments(parser, cls, prefix=agent_option_prefix(section))
    add_training_arguments(parser)
    parser.add_argument("--output-dir", required=True, help="directory of best.ckpt and last.ckpt")
    parser.add_argument("--results", required=True, help="destination results .json")


def agent_settings(args: argparse.Namespace) -> tuple[OnlineConfig, AgentBuildConfig, Any]:
    """The loop's config section, the build settings and ``--agent``'s own settings from train-agent's options."""
    section = agent_section(args.agent)
    return (from_namespace(OnlineConfig, args), from_namespace(AgentBuildConfig, args),
            from_namespace(agent_configs()[section], args, prefix=agent_option_prefix(section)))


def run_meta(args: argparse.Namespace, agent: Agent, seed: int, env_config: dict[str, Any],
             online: OnlineConfig) -> dict[str, Any]:
    """The metadata of one seed's run (checkpoints, results JSON, logger; without ``online.total_steps``, its
    resume fingerprint). It holds the config section of its own agent only (``agent.build``,
    :func:`~slate_rl.online.config.agent_section`): another agent's settings do not discard a resume."""
    section = agent_section(args.agent)
    return {"env": args.env, "env_config": env_config, "agent": args.agent, "variant": agent_variant(args.agent),
            "belief_table": agent.build["belief_table"], "seed": seed,
            "online": to_dict(online), section: agent.build[section], "gems_tag": parse_agent_tag(args.agent)[1],
            "inputs": input_hashes(embeddings=args.embeddings_file, gems=args.gems, mf=args.mf)}


@dataclass
class SeedRun:
    """One seed's agent, metadata, output directory, results path and resume checkpoint."""

    seed: int
    agent: Agent
    meta: dict[str, Any]
    out: Path
    results: Path
    resume: Path
    fingerprint: str

    def save_best(self, agent: Agent, state: LoopState) -> None:
        save_agent(self.out / "best.work.ckpt", agent, self.meta["agent"],
                   {**self.meta, "step": state.step, "val_return": state.best_val})


def run(args: argparse.Namespace) -> None:
    seeds, (outs, results) = seed_outputs(args, NAME, "output_dir", "results")
    online, build, agent_config = agent_settings(args)
    sim, table_source = simulator_from_args(args)
    c = sim.config
    click_model = ClickModel.of(sim) if "click_model" in agent_kind(args.agent).needs else None
    gems = agent_gems(args, sim)
    mf = (torch.from_numpy(load_item_embeddings(args.mf, c.num_items, c.embedding_dim, nonnegative=False))
          .to(sim.device) if args.mf else None)

    def prepare(seed: int, out: Path, result: Path) -> SeedRun:
        """Seed ``seed``'s agent, initialised from ``torch.manual_seed(seed)`` as a ``--seed`` run's, and its
        resume checkpoint (``last.ckpt`` of a finished run becomes the resume state, to extend it)."""
        torch.manual_seed(seed)
        agent = build_agent(args.agent, sim.items, c.num_items, c.slate_size, c.episode_length, gems, mf, agent_config,
                            build.belief_table, click_model)
        out.mkdir(parents=True, exist_ok=True)
        meta = run_meta(args, agent, seed, env_record(c), online)
        # Everything that shapes training: inputs, every environment parameter, agent settings and the
        # schedule, except total_steps (a finished run may be extended; a shorter one starts over).
        settings = {k: v for k, v in meta.items() if k != "online"}
        settings["online"] = {k: v for k, v in meta["online"].items() if k != "total_steps"}
        resume, last = out / "last.work.ckpt", out / "last.ckpt"
        remove_stale_temp_files(resume)
        if last.is_file() and not resume.is_file():
            os.replace(last, resume)
        return SeedRun(seed, agent, meta, out, result, resume, fingerprint(settings))

    jobs = list(zip(seeds, outs, results, strict=True))
    first = prepare(*jobs[0])
    # a plain SAC agent's seeds train together (one group); any other agent's one after another (groups of one,
    # each built right before it trains, as a --seed run builds it)
    groups = [jobs] if stackable(first.agent) else [[job] for job in jobs]
    runs: list[SeedRun] = []
    for group in groups:
        members = [first if job[0] == first.seed else prepare(*job) for job in group]
        ids = [r.seed for r in members]
        name = f"seed{ids[0]}" if len(ids) == 1 else f"seeds{'_'.join(map(str, ids))}"
        logger = RunLogger(f"{args.agent}-{args.env}-{name}", members[0].meta if len(ids) == 1 else
                           {**members[0].meta, "seeds": ids}, args.logger_mode, group=args.env)

        def save_best(i: int, agent: Agent, state: LoopState, members: list[SeedRun] = members) -> None:
            members[i].save_best(agent, state)

        start = time.perf_counter()
        states = train_seeds(sim, [r.agent for r in members], online, ids, save_best, [r.resume for r in members],
                             logger, progress=not args.no_progress, fingerprints=[r.fingerprint for r in members])
        elapsed = time.perf_counter() - start
        logger.finish()
        together = {"seeds_trained_together": ",".join(map(str, ids))} if len(ids) > 1 else {}
        for r, state in zip(members, states, strict=True):
            finish(args, sim, table_source, r, state, elapsed, **together)
        runs += members
    # Only once every seed is tested: a job killed while testing keeps every seed's resume state (Snakemake deletes
    # the outputs of a failed job, last.ckpt included), so that its rerun resumes the whole group.
    for r in runs:
        os.replace(r.resume, r.out / "last.ckpt")


def finish(args: argparse.Namespace, sim: Simulator, table_source: Any, r: SeedRun, state: LoopState,
           elapsed: float, **timings: Any) -> None:
    """Seed ``r``'s medium checkpoint, its best checkpoint tested on the test users, its results and timings."""
    medium = save_medium(r.out / "medium.ckpt", r.agent, args.agent, r.meta, state)
    load_agent(r.out / "best.work.ckpt", r.agent, args.agent)
    returns = evaluate(sim, r.agent, args.test_seed, args.test_sessions).cpu().numpy()
    stats = mean_ci(returns)
    copy_file(r.out / "best.work.ckpt", r.out / "best.ckpt")
    write_json(r.results, {
        **r.meta,
        "return_mean": stats["mean"], "return_std": stats["std"], "return_ci95": stats["ci"], "n_sessions": stats["n"],
        "test_seed": args.test_seed, "best_step": state.best_step, "best_val_return": state.best_val,
        "learning_curve": state.curve, "medium_step": medium[0], "medium_val_return": medium[1],
        "device": str(sim.device), "item_embeddings": table_source, "returns": np.round(returns, 3).tolist(),
    })
    write_timings(r.results, train_seconds=elapsed, device=str(sim.device), **timings)
    print(f"wrote {r.results}: seed {r.seed} test return {stats['mean']:.2f} +- {stats['ci']:.2f} "
          f"(best validation {state.best_val:.2f} at step {state.best_step}), {elapsed:.0f} s on {sim.device}")


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
