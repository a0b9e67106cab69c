"""``train-offline`` for several seeds of TD3+BC trained together in one process
(:mod:`slate_rl.offline.multiseed`), writing for every seed exactly the files ``train-offline --seed s``
writes: ``--policy-output`` and ``--results`` hold ``{seed}`` (e.g. ``data/policies/e/q/td3bc/seed{seed}.pt``
and ``results/e/offline/q/td3bc/seed{seed}.json``); each seed gets its policy file, its resume checkpoint
``<policy>.last.ckpt``, its results JSON (``"seed": s``, its learning curve and test return) and the
``.timings.json`` beside it (its training time is the group's; the group is named in
``seeds_trained_together``). The reference points do not depend on the seed: they are computed once.

The pieces of a run, :func:`prepare` (inputs, simulator, dataset in the buffer, normaliser), :func:`build_algo`,
:func:`run_meta` and :func:`write_outputs`, are those of the single-seed stage, so that both write the same
files. Algorithms other than TD3+BC are refused with a ConfigError (their seeds train one by one).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slate_rl.core.config import from_namespace, to_dict
from slate_rl.core.errors import ArtifactError, ConfigError
from slate_rl.core.io import file_sha256, fingerprint, write_json, write_timings
from slate_rl.core.logger import RunLogger
from slate_rl.core.stats import mean_ci
from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.data.d4rl import OfflineDataset, load_dataset
from slate_rl.models.belief import BeliefEncoder
from slate_rl.models.rankers import GeMSRanker, load_gems_ranker
from slate_rl.offline.base import Normalizer, OfflineAlgo
from slate_rl.offline.config import ALGO_CONFIGS, OfflineConfig
from slate_rl.offline.datasets import load_behaviour, relabel_actions
from slate_rl.offline.evaluation import (
    NORMALIZED_SCORE_DEFINITION,
    evaluate_returns,
    normalized_score,
    reference_returns,
)
from slate_rl.offline.loop import DivergenceError, OfflineState, prepare_buffer
from slate_rl.offline.multiseed import STACKABLE, train_offline_seeds
from slate_rl.offline.policy import policy_for, save_policy
from slate_rl.offline.registry import make_algo
from slate_rl.offline.sequence import SequenceAlgo, SessionSpec
from slate_rl.online.sac import SAC
from slate_rl.sim.core import TopicRec
from slate_rl.stages.common import input_hashes, simulator_from_args
from slate_rl.stages.train_agent_seeds import per_seed_path


@dataclass
class OfflineSetup:
    """What every seed of a train-offline run shares: settings, simulator, dataset in the prepared buffer."""

    cfg: OfflineConfig
    algo_cfg: Any
    sim: TopicRec
    table_source: Any
    dataset: OfflineDataset
    expert: SAC
    encoder: BeliefEncoder
    decoder: GeMSRanker
    relabel: dict[str, Any] | None
    buffer: EpisodeBuffer
    normalizer: Normalizer


def prepare(args: argparse.Namespace) -> OfflineSetup:
    """Check the inputs, build the simulator, load the dataset into the buffer (relabelled when asked) and
    normalise its states."""
    cfg = from_namespace(OfflineConfig, args)
    algo_cfg: Any = from_namespace(ALGO_CONFIGS[args.algo], args, prefix=f"{args.algo}_")
    sim, table_source = simulator_from_args(args)
    c = sim.config
    gems = load_gems_ranker(args.gems, num_items=c.num_items, device=sim.device)
    if not Path(args.expert).is_file():
        raise ArtifactError(f"{args.expert}: expert checkpoint not found (the dataset's state encoder); build it with "
                            f"snakemake {args.expert}")
    dataset = load_dataset(args.dataset, expect_gems_sha256=file_sha256(args.gems), expect_env=args.env,
                           expect_env_config=to_dict(c))
    expert_sha = file_sha256(args.expert)
    if dataset.metadata["state_encoder"]["sha256"] != expert_sha:
        raise ArtifactError(f"{args.dataset}: field 'state_encoder.sha256' is "
                            f"{dataset.metadata['state_encoder']['sha256']!r} but --expert {args.expert} has "
                            f"{expert_sha!r}: the states were encoded by another agent; pass that agent's best.ckpt")
    expert, _ = load_behaviour(args.expert, sim, gems)
    decoder: GeMSRanker = gems
    actions = None
    relabel: dict[str, Any] | None = None
    if args.relabel_gems:
        decoder = load_gems_ranker(args.relabel_gems, num_items=c.num_items, device=sim.device)
        raw = relabel_actions(decoder, dataset.arrays["slates"], dataset.arrays["clicks"])
        actions = decoder.clip(torch.from_numpy(raw).to(sim.device)).cpu().numpy()
        relabel = {"gems": args.relabel_gems, "sha256": file_sha256(args.relabel_gems),
                   "clipped_fraction": float((actions != raw).mean())}
    buffer = dataset.to_buffer(sim.device, actions)
    normalizer = Normalizer(int(dataset.metadata["obs_dim"])).to(sim.device)
    prepare_buffer(buffer, normalizer, cfg.normalize_states)
    return OfflineSetup(cfg, algo_cfg, sim, table_source, dataset, expert, expert.actor_belief, decoder, relabel,
                        buffer, normalizer)


def build_algo(args: argparse.Namespace, setup: OfflineSetup, seed: int) -> OfflineAlgo:
    """Seed ``seed``'s algorithm, initialised from ``torch.manual_seed(seed)``."""
    c = setup.sim.config
    torch.manual_seed(seed)
    return make_algo(args.algo, setup.normalizer.mean.shape[0], setup.decoder.action_center,
                     setup.decoder.action_scale, setup.cfg.gamma, setup.cfg.total_steps, {args.algo: setup.algo_cfg},
                     SessionSpec(c.episode_length, c.num_items, c.slate_size)).to(setup.sim.device)


def run_meta(args: argparse.Namespace, setup: OfflineSetup, cfg: OfflineConfig, seed: int
             ) -> tuple[dict[str, Any], str]:
    """Seed ``seed``'s result metadata and the fingerprint of its resume checkpoint."""
    meta: dict[str, Any] = {
        "env": args.env, "quality": setup.dataset.metadata["quality"], "algo": args.algo, "seed": seed,
        "offline": to_dict(cfg), "algo_config": to_dict(setup.algo_cfg),
        "inputs": input_hashes(dataset=args.dataset, gems=args.gems, expert=args.expert,
                               relabel_gems=args.relabel_gems, embeddings=args.embeddings_file),
        "state_encoder": {"source": "the dataset's (the expert's actor GRU), frozen", "checkpoint": args.expert},
        "decoder": "relabelled: " + args.relabel_gems if args.relabel_gems else "the dataset's GeMS",
        "relabel": setup.relabel,
    }
    return meta, fingerprint({k: meta[k] for k in ("offline", "algo_config", "inputs", "seed")})


def resume_path(policy_path: Path) -> Path:
    """The resume checkpoint beside a policy file."""
    return policy_path.with_name(policy_path.name + ".last.ckpt")


def references(args: argparse.Namespace, setup: OfflineSetup) -> dict[str, dict[str, Any]]:
    """The reference points on the test users (the same for every seed)."""
    return reference_returns(setup.sim, setup.expert, setup.encoder, setup.decoder, setup.dataset.metadata,
                             args.test_seed, args.test_sessions, args.expert_noise, args.expert_stochastic)


def write_outputs(args: argparse.Namespace, setup: OfflineSetup, algo: OfflineAlgo, state: OfflineState,
                  meta: dict[str, Any], refs: dict[str, dict[str, Any]], policy_path: Path, results: Path,
                  **timings: Any) -> dict[str, Any]:
    """Test the trained ``algo``, write its policy file, results JSON and timings; return the results."""
    algo.eval()
    sim = setup.sim
    policy = policy_for(setup.encoder, setup.decoder, algo, setup.normalizer)
    returns = evaluate_returns(sim, policy, args.test_seed, args.test_sessions)
    stats = mean_ci(returns)
    score = normalized_score(stats["mean"], refs)
    save_policy(policy_path, algo, setup.normalizer, setup.encoder, meta)
    result = {
        **meta,
        "return_mean": stats["mean"], "return_std": stats["std"], "return_ci95": stats["ci"], "n_sessions": stats["n"],
        "normalized_score": score,
        "normalized_score_definition": NORMALIZED_SCORE_DEFINITION,
        "references": refs, "test_seed": args.test_seed, "learning_curve": state.curve,
        "final_metrics": state.metrics, "device": str(sim.device),
        "item_embeddings": setup.table_source, "returns": np.round(returns, 3).tolist(),
        **({"sequence": algo.describe()} if isinstance(algo, SequenceAlgo) else {}),
    }
    write_json(results, result)
    write_timings(results, train_seconds=state.train_seconds, device=str(sim.device), **timings)
    print(f"wrote {results}: {args.algo} seed {meta['seed']} on {meta['quality']}: test return {stats['mean']:.2f} "
          f"+- {stats['ci']:.2f} (behaviour {refs['behaviour']['return_mean']:.2f}, z=0 "
          f"{refs['zero_action']['return_mean']:.2f}, random {refs['random']['return_mean']:.2f}; normalised "
          f"{score:.1f}), {state.train_seconds:.0f} s on {sim.device}")
    return result


def run(args: argparse.Namespace, seeds: list[int]) -> list[dict[str, Any]]:
    """Train ``seeds`` of ``args.algo`` (TD3+BC) together from train-offline's options (``args.seed`` is not read;
    ``--policy-output`` and ``--results`` hold ``{seed}``); the results of every seed, in order. A seed that
    diverged writes nothing: once the others are written, one DivergenceError names it."""
    if args.algo not in STACKABLE:
        raise ConfigError(f"train-offline --seeds supports {', '.join(STACKABLE)}, not {args.algo}; train its seeds "
                          "one by one (--seed)")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds must be distinct, got {seeds}")
    policies = [per_seed_path(args.policy_output, s, "--policy-output") for s in seeds]
    results = [per_seed_path(args.results, s, "--results") for s in seeds]
    setup = prepare(args)
    algos = [build_algo(args, setup, s) for s in seeds]
    metas, prints = zip(*(run_meta(args, setup, setup.cfg, s) for s in seeds), strict=True)
    sim, cfg = setup.sim, setup.cfg
    policy_fns = [policy_for(setup.encoder, setup.decoder, a, setup.normalizer) for a in algos]

    def validate(i: int) -> float:
        return float(evaluate_returns(sim, policy_fns[i], cfg.val_seed, cfg.val_sessions).mean())

    logger = RunLogger(f"{args.algo}-{args.env}-{metas[0]['quality']}-seeds{'_'.join(map(str, seeds))}",
                       {**metas[0], "seeds": seeds}, args.logger_mode, group=args.env)
    start = time.perf_counter()
    outcomes = train_offline_seeds(algos, setup.buffer, cfg, seeds, validate, [resume_path(p) for p in policies],
                                   logger, progress=not args.no_progress, fingerprints=list(prints))
    elapsed = time.perf_counter() - start
    logger.finish()
    refs = references(args, setup)
    written = []
    for algo, outcome, meta, policy_path, result in zip(algos, outcomes, metas, policies, results, strict=True):
        if isinstance(outcome, OfflineState):
            written.append(write_outputs(args, setup, algo, outcome, meta, refs, policy_path, result,
                                         seeds_trained_together=",".join(map(str, seeds))))
    failed = [(s, o) for s, o in zip(seeds, outcomes, strict=True) if isinstance(o, DivergenceError)]
    if failed:
        raise DivergenceError("; ".join(str(o) for _, o in failed))
    print(f"{len(seeds)} seeds of {args.algo} trained together in {elapsed:.0f} s on {sim.device}")
    return written
