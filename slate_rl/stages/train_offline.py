"""Stage ``train-offline``: train an offline algorithm on a dataset and evaluate it online.

The policy acts in the simulator through the dataset's state encoder (the expert's actor GRU,
frozen; ``--expert``) and the GeMS decoder whose latent space the actions live in: the dataset's
(``--gems``), or another one (``--relabel-gems``), in which case the actions are re-encoded with
that GeMS's encoder before training (stated in the result). The final policy is tested on the
fixed test users beside its reference points and normalised
(:mod:`slate_rl.offline.evaluation`). The expert is rebuilt from the settings stored in its
checkpoint.

Writes the policy (``--policy-output``, tensors + JSON), the results JSON and a resume checkpoint
beside the policy (``<policy>.last.ckpt``); a rerun resumes from it.

``--seeds 0,1,2`` instead of ``--seed``: the inputs are loaded once and each seed is trained as
``--seed s`` trains it (:func:`train_seed`: the same bytes), one after another, writing the files of a
``--seed`` run; ``--policy-output`` and ``--results`` then hold ``{seed}``. Each seed keeps its own
resume checkpoint, so a rerun of a killed group resumes every seed where it stopped (a finished seed
only re-evaluates). A seed that diverges writes nothing and the others go on; once they are written,
one DivergenceError names it. (Stacking the seeds' networks into one batched update bought nothing on
a CPU, x0.93-1.05 for TD3+BC, so every method trains one seed at a time.)
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slate_rl.core.config import add_arguments as add_config_arguments
from slate_rl.core.config import from_namespace, to_dict
from slate_rl.core.errors import ArtifactError
from slate_rl.core.io import file_sha256, fingerprint, write_json, write_timings
from slate_rl.core.logger import RunLogger
from slate_rl.core.stats import mean_ci
from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.data.d4rl import OfflineDataset, load_dataset
from slate_rl.models.belief import BeliefEncoder
from slate_rl.models.rankers import GeMSRanker, load_gems_ranker
from slate_rl.offline.base import Normalizer, OfflineAlgo
from slate_rl.offline.config import method_schedule
from slate_rl.offline.datasets import load_behaviour, relabel_actions
from slate_rl.offline.diagnostics import Diagnostics
from slate_rl.offline.evaluation import (
    NORMALIZED_SCORE_DEFINITION,
    evaluate_returns,
    normalized_score,
    reference_returns,
)
from slate_rl.offline.loop import (
    DivergenceError,
    OfflineConfig,
    OfflineState,
    prepare_buffer,
    train_offline,
)
from slate_rl.offline.policy import policy_for, save_policy
from slate_rl.offline.registry import ALGO_CONFIGS, make_algo
from slate_rl.offline.sequence import SessionSpec
from slate_rl.online.sac import SAC
from slate_rl.sim.config import env_record
from slate_rl.sim.protocol import Simulator
from slate_rl.stages.common import (
    add_env_arguments,
    add_training_arguments,
    finite_float,
    input_hashes,
    seed_outputs,
    simulator_from_args,
)
from slate_rl.stages.offline_references import add_reference_arguments, policy_references_for

NAME = "train-offline"
HELP = ("train an offline algorithm (TD3+BC, CQL, IQL, BC, Decision Transformer, Decision Diffuser) on a dataset and "
        "evaluate it in the simulator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_env_arguments(parser, embeddings_required=True, device=False)
    parser.add_argument("--algo", required=True, choices=tuple(ALGO_CONFIGS), help="offline algorithm")
    parser.add_argument("--dataset", required=True, help="dataset .npz (data/offline/{env}/{quality}.npz)")
    parser.add_argument("--gems", required=True, help="the dataset's GeMS checkpoint")
    parser.add_argument("--expert", required=True, help="the dataset's state encoder: the expert agent's best.ckpt")
    parser.add_argument("--relabel-gems", default=None,
                        help="train and act in the latent space of this other GeMS (actions are re-encoded)")
    parser.add_argument("--expert-stochastic", action="store_true",
                        help="the collection-mode expert reference samples its SAC policy (offline_data.deterministic: "
                        "false); the normalised score always uses the deterministic expert")
    parser.add_argument("--expert-noise", type=finite_float, default=0.1,
                        help="exploration noise of the collection-mode expert reference (as offline_data.noise)")
    parser.add_argument("--seed", type=int, default=None, help="training seed")
    parser.add_argument("--seeds", default=None,
                        help="instead of --seed: comma-separated seeds trained in one process (one after another, each "
                        "as --seed trains it); --policy-output and --results then contain {seed}")
    parser.add_argument("--keep-denormals", action="store_true",
                        help="keep subnormal floats on the CPU (IEEE arithmetic; by default they are flushed to zero "
                        "while training, several times faster once networks produce them)")
    add_reference_arguments(parser)
    add_config_arguments(parser, OfflineConfig)
    for name in ALGO_CONFIGS:
        add_config_arguments(parser, ALGO_CONFIGS[name], prefix=f"{name}_")
    add_training_arguments(parser)
    parser.add_argument("--policy-output", required=True, help="destination policy .pt")
    parser.add_argument("--results", required=True, help="destination results .json")


@dataclass
class OfflineInputs:
    """What every seed of a run reads: the simulator, the dataset, its GeMS, the expert (state encoder), the
    decoder the actions live in (the dataset's GeMS, or ``--relabel-gems``'s) and the relabelled actions."""

    sim: Simulator
    table_source: Any
    dataset: OfflineDataset
    expert: SAC
    encoder: BeliefEncoder
    decoder: GeMSRanker
    actions: np.ndarray | None
    relabel: dict[str, Any] | None


def load_inputs(args: argparse.Namespace) -> OfflineInputs:
    """Load and check the run's inputs (once for all its seeds)."""
    sim, table_source = simulator_from_args(args)
    c = sim.config
    gems = load_gems_ranker(args.gems, num_items=c.num_items, device=sim.device)
    if not Path(args.expert).is_file():
        raise ArtifactError(f"{args.expert}: expert checkpoint not found (the dataset's state encoder); build it with "
                            f"snakemake {args.expert}")
    dataset = load_dataset(args.dataset, expect_gems_sha256=file_sha256(args.gems), expect_env=args.env,
                           expect_env_config=env_record(c))
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
    return OfflineInputs(sim, table_source, dataset, expert, expert.actor_belief, decoder, actions, relabel)


def run(args: argparse.Namespace) -> None:
    seeds, (policies, results) = seed_outputs(args, NAME, "policy_output", "results")
    cfg = from_namespace(OfflineConfig, args)  # the settings' errors before any loading
    algo_cfg: Any = from_namespace(ALGO_CONFIGS[args.algo], args, prefix=f"{args.algo}_")
    cfg = method_schedule(cfg, algo_cfg)  # the method's own number of updates and batch, where it sets them
    inputs = load_inputs(args)
    with flush_denormals(inputs.sim.device.type == "cpu" and not args.keep_denormals):
        failed = []
        for seed, policy_path, results_path in zip(seeds, policies, results, strict=True):
            try:
                train_seed(args, inputs, cfg, algo_cfg, seed, policy_path, results_path)
            except DivergenceError as err:
                if len(seeds) == 1:
                    raise
                print(f"{err}; the other seeds go on", flush=True)
                failed.append(err)
        if failed:
            raise DivergenceError("; ".join(str(err) for err in failed))


@contextlib.contextmanager
def flush_denormals(enabled: bool) -> Iterator[None]:
    """Treat subnormal floats as zero on the CPU while training (restored afterwards).

    Trained offline networks produce subnormal numbers (below 1.2e-38 in float32), which x86 CPUs
    process in microcode at a fraction of the normal speed: a CQL update from a checkpoint at step 3,000
    ran 0.52 updates/s with them and 1.72 without (bench/README.md), and whole CQL jobs ran 3-8x slower
    than their first updates. Flushing changes only numbers below that bound (docs/deviations.md);
    ``--keep-denormals`` keeps IEEE arithmetic. CUDA devices are left alone."""
    if enabled and torch.set_flush_denormal(True):
        try:
            yield
        finally:
            torch.set_flush_denormal(False)
    else:
        yield


def prepare_data(inputs: OfflineInputs, cfg: OfflineConfig) -> tuple[EpisodeBuffer, Normalizer]:
    """The dataset in the replay buffer (relabelled actions if any), its states normalised."""
    buffer = inputs.dataset.to_buffer(inputs.sim.device, inputs.actions)
    normalizer = Normalizer(int(inputs.dataset.metadata["obs_dim"])).to(inputs.sim.device)
    prepare_buffer(buffer, normalizer, cfg.normalize_states)
    return buffer, normalizer


def build_algo(args: argparse.Namespace, inputs: OfflineInputs, cfg: OfflineConfig, algo_cfg: Any,
               normalizer: Normalizer, seed: int) -> OfflineAlgo:
    """Seed ``seed``'s algorithm, initialised from ``torch.manual_seed(seed)``."""
    c = inputs.sim.config
    torch.manual_seed(seed)
    return make_algo(args.algo, normalizer.mean.shape[0], inputs.decoder.action_center, inputs.decoder.action_scale,
                     cfg.gamma, cfg.total_steps, {args.algo: algo_cfg},
                     SessionSpec(c.episode_length, c.num_items, c.slate_size)).to(inputs.sim.device)


def run_meta(args: argparse.Namespace, inputs: OfflineInputs, cfg: OfflineConfig, algo_cfg: Any, seed: int
             ) -> tuple[dict[str, Any], str]:
    """Seed ``seed``'s result metadata and the fingerprint of its resume checkpoint."""
    meta: dict[str, Any] = {
        "env": args.env, "quality": inputs.dataset.metadata["quality"], "algo": args.algo, "seed": seed,
        "offline": to_dict(cfg), "algo_config": to_dict(algo_cfg),
        "inputs": input_hashes(dataset=args.dataset, gems=args.gems, expert=args.expert,
                               relabel_gems=args.relabel_gems, embeddings=args.embeddings_file),
        "state_encoder": {"source": "the dataset's (the expert's actor GRU), frozen", "checkpoint": args.expert},
        "decoder": "relabelled: " + args.relabel_gems if args.relabel_gems else "the dataset's GeMS",
        "relabel": inputs.relabel,
    }
    return meta, fingerprint({k: meta[k] for k in ("offline", "algo_config", "inputs", "seed")})


def resume_path(policy_path: Path) -> Path:
    """The resume checkpoint beside a policy file."""
    return policy_path.with_name(policy_path.name + ".last.ckpt")


def references(args: argparse.Namespace, inputs: OfflineInputs) -> dict[str, dict[str, Any]]:
    """The reference points on the test users (the same for every seed): the dataset's behaviour return and the
    reference policies (``--references``, or measured in the latent space the policy acts in)."""
    policies = policy_references_for(args, inputs.sim, inputs.expert, inputs.decoder,
                                     args.relabel_gems or args.gems, args.expert_noise, args.expert_stochastic)
    return reference_returns(policies, inputs.dataset.metadata)


def train_seed(args: argparse.Namespace, inputs: OfflineInputs, cfg: OfflineConfig, algo_cfg: Any, seed: int,
               policy_path: Path, results_path: Path) -> None:
    """Train and test seed ``seed`` (its own buffer, networks and resume checkpoint); write its policy, results and
    timings: the whole of a ``--seed`` run after loading the inputs."""
    sim = inputs.sim
    buffer, normalizer = prepare_data(inputs, cfg)
    algo = build_algo(args, inputs, cfg, algo_cfg, normalizer, seed)
    policy = policy_for(inputs.encoder, inputs.decoder, algo, normalizer)
    meta, run_id = run_meta(args, inputs, cfg, algo_cfg, seed)
    logger = RunLogger(f"{args.algo}-{args.env}-{meta['quality']}-seed{seed}", meta, args.logger_mode,
                       group=args.env)
    validate = Diagnostics(sim, policy, algo, inputs.encoder, normalizer, inputs.decoder, buffer, cfg,
                           inputs.dataset.metadata)
    state = train_offline(algo, buffer, cfg, seed, validate, resume_path(policy_path), logger,
                          progress=not args.no_progress, fingerprint=run_id)
    logger.finish()
    write_outputs(args, inputs, algo, normalizer, state, meta, references(args, inputs), policy_path, results_path)


def write_outputs(args: argparse.Namespace, inputs: OfflineInputs, algo: OfflineAlgo, normalizer: Normalizer,
                  state: OfflineState, meta: dict[str, Any], refs: dict[str, dict[str, Any]], policy_path: Path,
                  results_path: Path) -> dict[str, Any]:
    """Test the trained ``algo`` on the test users; write its policy file, results JSON and timings; return the
    results."""
    sim = inputs.sim
    algo.eval()
    returns = evaluate_returns(sim, policy_for(inputs.encoder, inputs.decoder, algo, normalizer), args.test_seed,
                               args.test_sessions)
    stats = mean_ci(returns)
    score = normalized_score(stats["mean"], refs)
    save_policy(policy_path, algo, normalizer, inputs.encoder, meta)
    result = {
        **meta,
        "return_mean": stats["mean"], "return_std": stats["std"], "return_ci95": stats["ci"], "n_sessions": stats["n"],
        "normalized_score": score,
        "normalized_score_definition": NORMALIZED_SCORE_DEFINITION,
        "references": refs, "test_seed": args.test_seed, "learning_curve": state.curve,
        "diagnostics": state.diagnostics, "final_metrics": state.metrics, "device": str(sim.device),
        "item_embeddings": inputs.table_source, "returns": np.round(returns, 3).tolist(),
        **({"sequence": described} if (described := algo.describe()) is not None else {}),
    }
    write_json(results_path, result)
    write_timings(results_path, train_seconds=state.train_seconds, device=str(sim.device))
    print(f"wrote {results_path}: {args.algo} on {meta['quality']}: test return {stats['mean']:.2f} +- "
          f"{stats['ci']:.2f} (behaviour {refs['behaviour']['return_mean']:.2f}, z=0 "
          f"{refs['zero_action']['return_mean']:.2f}, random {refs['random']['return_mean']:.2f}; normalised "
          f"{score:.1f}), {state.train_seconds:.0f} s on {sim.device}")
    return result
