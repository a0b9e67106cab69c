"""Stage ``offline-references``: the reference policies of an environment's offline results, measured once.

Every offline dataset of an environment shares one expert (the collecting SAC+GeMS agent, also the
state encoder) and one GeMS, so the four reference policies its results are shown beside are the same
for every dataset, method and seed: the expert acting as during collection and deterministically
(R_expert of the normalised score), the constant latent action z = 0 and uniform random latent
actions in the GeMS box (R_random). This stage measures them on the fixed test users and writes
``data/offline/{env}/references.json`` (with the settings they were measured with: environment,
hashes of the GeMS, expert and item table, test users, the expert's collection mode), which
``collect --references`` (the label checks) and ``train-offline --references`` read instead of
measuring them again; a file measured with other settings is refused, naming the setting.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from slate_rl.core.artifacts import TEST_SEED, TEST_SESSIONS, check_environment
from slate_rl.core.errors import ConfigError
from slate_rl.core.io import file_sha256, write_json, write_timings
from slate_rl.models.rankers import GeMSRanker, load_gems_ranker
from slate_rl.offline.datasets import load_behaviour
from slate_rl.offline.evaluation import load_references, policy_references, references_document
from slate_rl.online.sac import SAC
from slate_rl.sim.config import env_record
from slate_rl.sim.protocol import Simulator
from slate_rl.stages.common import (
    add_env_arguments,
    add_training_arguments,
    finite_float,
    simulator_from_args,
    size_int,
)

NAME = "offline-references"
HELP = "measure the reference policies of an environment's offline results (expert, z = 0, random) once"


def add_test_user_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--test-seed", type=int, default=TEST_SEED, help="seed of the fixed test users")
    parser.add_argument("--test-sessions", type=size_int("test_sessions"), default=TEST_SESSIONS, help="test users")


def add_reference_arguments(parser: argparse.ArgumentParser) -> None:
    """The test users and ``--references``, of ``collect`` and ``train-offline``."""
    add_test_user_arguments(parser)
    parser.add_argument("--references", default=None,
                        help="the environment's reference policies (data/offline/{env}/references.json, from "
                        "slate-rl offline-references); default: measure them here")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_env_arguments(parser, embeddings_required=True, device=False)
    parser.add_argument("--gems", required=True, help="GeMS checkpoint of the expert (its latent space)")
    parser.add_argument("--expert", required=True, help="the SAC+GeMS agent's best.ckpt (the collecting expert)")
    parser.add_argument("--expert-noise", type=finite_float, default=0.1,
                        help="exploration noise of the expert during collection (offline_data.noise)")
    parser.add_argument("--expert-stochastic", action="store_true",
                        help="the expert samples its SAC policy during collection (offline_data.deterministic: false)")
    add_test_user_arguments(parser)
    add_training_arguments(parser)
    parser.add_argument("--output", required=True, help="destination .json (data/offline/{env}/references.json)")


def reference_settings(args: argparse.Namespace, sim: Simulator, gems_path: str, noise: float, stochastic: bool
                       ) -> dict[str, Any]:
    """What the reference policies depend on; stored in the references file and compared when it is read."""
    settings = {"env": args.env, "env_config": env_record(sim.config), "gems_sha256": file_sha256(gems_path),
                "expert_sha256": file_sha256(args.expert), "embeddings_sha256": file_sha256(args.embeddings_file),
                "test_seed": args.test_seed, "test_sessions": args.test_sessions, "expert_noise": noise,
                "expert_stochastic": stochastic}
    return json.loads(json.dumps(settings))  # as stored: lists, not tuples


def policy_references_for(args: argparse.Namespace, sim: Simulator, expert: SAC, decoder: GeMSRanker, gems_path: str,
                          noise: float, stochastic: bool) -> dict[str, dict[str, Any]]:
    """The reference policies: read from ``args.references`` (checked against this run's settings), or measured."""
    settings = reference_settings(args, sim, gems_path, noise, stochastic)
    if args.references:
        return load_references(args.references, settings)
    return policy_references(sim, expert, expert.actor_belief, decoder, args.test_seed, args.test_sessions, noise,
                             stochastic)


def run(args: argparse.Namespace) -> None:
    if args.expert_noise < 0.0:
        raise ConfigError(f"--expert-noise must be >= 0, got {args.expert_noise}")
    sim, _ = simulator_from_args(args)
    gems = load_gems_ranker(args.gems, num_items=sim.config.num_items, device=sim.device)
    check_environment(args.gems, gems.meta, args.env, env_record(sim.config), "GeMS checkpoint")
    expert, _ = load_behaviour(args.expert, sim, gems, args.env)
    start = time.perf_counter()
    refs = policy_references(sim, expert, expert.actor_belief, gems, args.test_seed, args.test_sessions,
                             args.expert_noise, args.expert_stochastic)
    elapsed = time.perf_counter() - start
    settings = reference_settings(args, sim, args.gems, args.expert_noise, args.expert_stochastic)
    write_json(args.output, references_document(refs, settings))
    write_timings(args.output, evaluate_seconds=elapsed, device=str(sim.device))
    print(f"wrote {args.output}: " + ", ".join(f"{k} {v['return_mean']:.2f}" for k, v in refs.items())
          + f" on {args.test_sessions} test users, {elapsed:.1f} s on {sim.device}")
