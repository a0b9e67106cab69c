"""Stage ``collect``: an offline dataset in the D4RL layout, ``data/offline/{env}/{quality}.npz`` + ``.json``.

Qualities: ``expert`` (the agent's best checkpoint), ``medium`` (its medium checkpoint, given
with ``--behaviour``), ``random`` (uniform latent actions inside the GeMS bounds), ``replay``
(the expert run's replay buffer: ``--replay``, by default the ``last.ckpt`` beside ``--expert``),
``logged`` (the logged epsilon-greedy sessions GeMS trained on, ``--logs``: states from the expert's actor
GRU, actions the GeMS encoder's mean of each shown slate and its clicks),
or any other name built as a mixture of existing datasets with ``--mix PATH=WEIGHT`` (repeatable).

States are beliefs of the expert's actor GRU for every quality (one state space per
environment). :mod:`slate_rl.offline.datasets` builds the dataset; this stage parses, calls and
writes. The behaviour agents are rebuilt from the settings stored in their checkpoints. The
behaviour return recorded in the metadata is measured online on the fixed test users, with the
behaviour acting exactly as during collection (random, sampled or deterministic actions, same
noise); replay and mixtures record the dataset's own return. Labels are checked
(:func:`slate_rl.offline.datasets.check_label`): an expert or medium behaviour that is not above the
random-quality return (uniform latent actions, same test users) by ``--label-margin``, an expert
below ``--label-ratio`` x the collecting agent's deterministic test return, or a medium outside
[ratio, 1 / ratio] x its target stops the stage with both numbers, and nothing is written. Those
reference returns come from ``--references`` (the environment's ``offline-references`` file) or are
measured here. The
collection time goes to ``{quality}.timings.json``, not into the metadata, so that the dataset is
the same bytes on every run with the same seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from slate_rl.core.artifacts import check_environment
from slate_rl.core.errors import ConfigError
from slate_rl.core.io import write_timings
from slate_rl.data.d4rl import save_dataset
from slate_rl.models.rankers import load_gems_ranker
from slate_rl.offline.config import OfflineDataConfig
from slate_rl.offline.datasets import DatasetRequest, build_dataset, load_behaviour
from slate_rl.sim.config import env_record
from slate_rl.stages.common import (
    add_env_arguments,
    add_training_arguments,
    finite_float,
    simulator_from_args,
    size_int,
)
from slate_rl.stages.offline_references import add_reference_arguments, policy_references_for


def noise_levels(text: str) -> list[float]:
    """``"0,0.1,0.4"`` -> [0.0, 0.1, 0.4] (``--sweep-noises``); the range checks are OfflineDataConfig's."""
    try:
        return [finite_float(item) for item in text.split(",")]
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected comma-separated finite numbers, e.g. 0,0.1,0.4; got {text!r}"
                                         ) from None


NAME = "collect"
HELP = ("collect an offline dataset (expert, medium, random, replay, logged, step_mix, noise_sweep or a mixture) in "
        "the D4RL layout")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_env_arguments(parser, embeddings_required=True, device=False)
    parser.add_argument("--quality", required=True,
                        help="expert, medium, random, replay, logged, step_mix, noise_sweep, or a mixture name (with "
                        "--mix)")
    parser.add_argument("--gems", required=True, help="GeMS checkpoint of the agent (its latent space)")
    parser.add_argument("--expert", required=True,
                        help="the SAC+GeMS agent's best.ckpt: expert behaviour and the state encoder of every quality "
                        "(the agent is rebuilt from the settings stored in the checkpoint)")
    parser.add_argument("--behaviour", default=None,
                        help="checkpoint acting for medium (the agent's medium.ckpt); default: --expert")
    parser.add_argument("--replay", default=None,
                        help="the online run's final training state for replay (its last.ckpt); default: the "
                        "last.ckpt beside --expert")
    parser.add_argument("--logs", default=None,
                        help="the logged sessions of --quality logged (data/logs/{env}.npz): states from the expert's "
                        "actor GRU, actions relabelled by the GeMS encoder")
    parser.add_argument("--mix", action="append", default=[], metavar="PATH=WEIGHT",
                        help="a component dataset of a mixture and its weight (repeat)")
    parser.add_argument("--episodes", type=size_int("episodes"), default=10_000, help="episodes (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the users and the sampled actions")
    parser.add_argument("--noise", type=finite_float, default=0.1,
                        help="std of Gaussian noise on latent actions, as a fraction of the bounds' half-width "
                        "(default: 0.1)")
    parser.add_argument("--step-mix-other", choices=("medium", "random"), default="medium",
                        help="the behaviour --quality step_mix mixes with the expert, step by step: medium (needs "
                        "--behaviour) or random latent actions (default: medium)")
    parser.add_argument("--sweep-noises", type=noise_levels, default=[0.0, 0.1, 0.2, 0.4, 0.8],
                        help="comma-separated noise levels of --quality noise_sweep, one per session (default: "
                        "0,0.1,0.2,0.4,0.8)")
    parser.add_argument("--stochastic", action="store_true",
                        help="the behaviour samples from its SAC policy instead of acting with its mean action")
    parser.add_argument("--label-margin", type=finite_float, default=0.1,
                        help="an expert/medium behaviour must return more than (1 + margin) x the random quality's "
                        "return on the test users (default: 0.1)")
    parser.add_argument("--label-ratio", type=finite_float, default=0.9,
                        help="the expert behaviour must return at least ratio x the collecting agent's deterministic "
                        "test return, the medium one within [ratio, 1/ratio] x its target (default: 0.9)")
    parser.add_argument("--skip-label-check", action="store_true",
                        help="write an expert/medium dataset even if it fails the label check "
                        "(recorded in the metadata)")
    parser.add_argument("--batch-size", type=size_int("batch_size"), default=4096, help="users simulated in parallel")
    add_reference_arguments(parser)
    add_training_arguments(parser)
    parser.add_argument("--output", required=True, help="destination .npz (the metadata .json goes beside it)")


def run(args: argparse.Namespace) -> None:
    for flag, value in (("--noise", args.noise), ("--label-margin", args.label_margin)):
        if value < 0.0:  # named by its flag here; OfflineDataConfig names the config key
            raise ConfigError(f"{flag} must be >= 0, got {value}")
    if not 0.0 < args.label_ratio <= 1.0:
        raise ConfigError(f"--label-ratio must be in (0, 1], got {args.label_ratio}")
    settings = OfflineDataConfig(episodes=args.episodes, seed=args.seed, noise=args.noise,
                                 deterministic=not args.stochastic, label_margin=args.label_margin,
                                 label_ratio=args.label_ratio, label_check=not args.skip_label_check,
                                 batch_size=args.batch_size, step_mix_other=args.step_mix_other,
                                 sweep_noises=args.sweep_noises)
    req = DatasetRequest(env=args.env, quality=args.quality, gems=args.gems, expert=args.expert,
                         behaviour=args.behaviour, replay=args.replay, logs=args.logs, mix=tuple(args.mix),
                         settings=settings,
                         test_seed=args.test_seed, test_sessions=args.test_sessions)
    sim, table_source = simulator_from_args(args)
    gems = load_gems_ranker(args.gems, num_items=sim.config.num_items, device=sim.device)
    check_environment(args.gems, gems.meta, args.env, env_record(sim.config), "GeMS checkpoint")
    if not args.mix and args.quality in ("expert", "medium"):  # their labels are checked against these
        expert, _ = load_behaviour(args.expert, sim, gems, args.env)
        refs = policy_references_for(args, sim, expert, gems, args.gems, args.noise, args.stochastic)
        req = dataclasses.replace(req, references=refs)
    start = time.perf_counter()
    arrays, metadata = build_dataset(req, sim, gems, table_source, progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    save_dataset(args.output, arrays, metadata)
    n = metadata["episodes"] * metadata["episode_length"]
    write_timings(args.output, collect_seconds=elapsed, transitions_per_second=n / max(elapsed, 1e-9),
                  device=str(sim.device))
    print(f"wrote {args.output}: {metadata['episodes']} episodes ({n} transitions) in {elapsed:.1f} s "
          f"({n / max(elapsed, 1e-9):,.0f} transitions/s); dataset return {metadata['dataset_return']['mean']:.2f}, "
          f"behaviour return {metadata['behaviour_return']['mean']:.2f} +- {metadata['behaviour_return']['ci95']:.2f}")
