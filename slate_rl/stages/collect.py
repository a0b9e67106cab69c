"""Stage ``collect``: an offline dataset in the D4RL layout, ``data/offline/{env}/{quality}.npz`` + ``.json``.

Qualities: ``expert`` (the agent's best checkpoint), ``medium`` (its medium checkpoint, given
with ``--behaviour``), ``random`` (uniform latent actions inside the GeMS bounds), ``replay``
(the expert run's replay buffer, read from ``last.ckpt`` beside ``--expert``), or any other
name built as a mixture of existing datasets with ``--mix PATH=WEIGHT`` (repeatable).

States are beliefs of the expert's actor GRU for every quality (one state space per
environment, see :mod:`slate_rl.offline.collect`). The behaviour return recorded in the
metadata is measured online on the fixed test users, with the behaviour acting exactly as during
collection (random, sampled or deterministic actions, same noise); replay and mixtures record the
dataset's own return. Labels are checked: an expert or medium behaviour that is not above the
random-quality return (uniform latent actions, same test users) by ``--label-margin`` stops the
stage with both numbers, and nothing is written.
"""

from __future__ import annotations

import argparse
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slate_rl.core.config import add_arguments as add_config_arguments
from slate_rl.core.config import from_namespace, to_dict
from slate_rl.core.errors import ArtifactError, ConfigError
from slate_rl.core.io import file_sha256, read_resume_checkpoint
from slate_rl.core.stats import mean_ci
from slate_rl.data.d4rl import load_dataset, save_dataset
from slate_rl.models.rankers import load_gems_ranker
from slate_rl.offline.collect import (
    QUALITIES,
    NoisyPolicy,
    check_label,
    collect_episodes,
    collection_mode,
    load_behaviour,
    mix_datasets,
    mixture_counts,
    replay_episodes,
)
from slate_rl.online.agents import parse_agent_tag
from slate_rl.online.collect import policy_returns
from slate_rl.online.sac import SACConfig
from slate_rl.stages.common import add_env_arguments, add_training_arguments, positive_int, simulator_from_args

NAME = "collect"
HELP = "collect an offline dataset (expert, medium, random, replay or a mixture) in the D4RL layout"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_env_arguments(parser, embeddings_required=True, device=False)
    parser.add_argument("--quality", required=True,
                        help="expert, medium, random, replay, or a mixture name (with --mix)")
    parser.add_argument("--agent", required=True, help="the SAC+GeMS agent tag of the checkpoints")
    parser.add_argument("--gems", required=True, help="GeMS checkpoint of the agent (its latent space)")
    parser.add_argument("--expert", required=True,
                        help="the agent's best.ckpt: expert behaviour and the state encoder of every quality")
    parser.add_argument("--behaviour", default=None,
                        help="checkpoint acting for medium (the agent's medium.ckpt); default: --expert")
    parser.add_argument("--mix", action="append", default=[], metavar="PATH=WEIGHT",
                        help="a component dataset of a mixture and its weight (repeat)")
    parser.add_argument("--episodes", type=positive_int, default=10_000, help="episodes (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the users and the sampled actions")
    parser.add_argument("--noise", type=float, default=0.1,
                        help="std of Gaussian noise on latent actions, as a fraction of the bounds' half-width "
                        "(default: 0.1)")
    parser.add_argument("--stochastic", action="store_true",
                        help="the behaviour samples from its SAC policy instead of acting with its mean action")
    parser.add_argument("--label-margin", type=float, default=0.1,
                        help="an expert/medium behaviour must return more than (1 + margin) x the random quality's "
                        "return on the test users (default: 0.1)")
    parser.add_argument("--skip-label-check", action="store_true",
                        help="write an expert/medium dataset even if it fails the label check "
                        "(recorded in the metadata)")
    parser.add_argument("--batch-size", type=positive_int, default=4096, help="users simulated in parallel")
    parser.add_argument("--test-seed", type=int, default=58517, help="seed of the users measuring the behaviour")
    parser.add_argument("--test-sessions", type=positive_int, default=500, help="users measuring the behaviour")
    add_config_arguments(parser, SACConfig)
    add_training_arguments(parser)
    parser.add_argument("--output", required=True, help="destination .npz (the metadata .json goes beside it)")


def quality_seed(seed: int, quality: str) -> int:
    """Users of each quality differ (a mixture of two qualities never repeats a user)."""
    return seed * 1_000_003 + zlib.crc32(quality.encode()) % 1_000_003


def run(args: argparse.Namespace) -> None:
    if args.noise < 0.0:
        raise ConfigError(f"--noise must be >= 0, got {args.noise}")
    if args.label_margin < 0.0:
        raise ConfigError(f"--label-margin must be >= 0, got {args.label_margin}")
    if parse_agent_tag(args.agent)[0] != "sac_gems":
        raise ConfigError(f"offline datasets need a SAC+GeMS agent, got {args.agent!r}")
    if args.mix and args.quality in QUALITIES:
        raise ConfigError(f"--mix builds a mixture; give it its own name, not {args.quality!r}")
    if args.quality == "medium" and not args.behaviour:
        raise ConfigError("--quality medium needs --behaviour (the online run's medium.ckpt)")
    if not args.mix and args.quality not in QUALITIES:
        raise ConfigError(f"unknown quality {args.quality!r}: expert, medium, random, replay, or a mixture with --mix")
    sim, table_source = simulator_from_args(args)
    c = sim.config
    gems = load_gems_ranker(args.gems, num_items=c.num_items, device=sim.device)
    sac = from_namespace(SACConfig, args)
    expert, expert_meta = load_behaviour(args.expert, args.agent, sim, gems, sac)
    encoder = expert.actor_belief
    gems_sha = file_sha256(args.gems)
    seed = quality_seed(args.seed, args.quality)
    start = time.perf_counter()
    behaviour: dict[str, Any] = {"agent": args.agent}
    returns_online = None
    if args.mix:
        parts = []
        weights = {}
        for item in args.mix:
            path, _, weight = item.rpartition("=")
            if not path:
                raise ConfigError(f"--mix expects PATH=WEIGHT, got {item!r}")
            try:
                weights[path] = float(weight)
            except ValueError:
                raise ConfigError(f"--mix expects PATH=WEIGHT with a number as weight, got {item!r}") from None
        for path, n in mixture_counts(weights, args.episodes).items():
            parts.append((load_dataset(path, expect_gems_sha256=gems_sha, expect_env=args.env,
                                       expect_env_config=to_dict(c)), n))
        arrays = mix_datasets(parts)
        behaviour.update({"mixture": [{"dataset": str(ds.path), "quality": ds.metadata["quality"], "episodes": n,
                                       "sha256": file_sha256(ds.path)} for ds, n in parts]})
    elif args.quality == "replay":
        last = Path(args.expert).with_name("last.ckpt")
        if not last.is_file():
            raise ArtifactError(f"{last}: the online run's resume state (replay buffer) is missing; rerun the online "
                                "agent rule to rebuild it")
        payload = read_resume_checkpoint(last)
        if "buffer" not in payload:
            raise ArtifactError(f"{last}: field 'buffer' missing; this is not an online run's resume state")
        arrays = replay_episodes(payload["buffer"], encoder, args.episodes, sim.device)
        behaviour.update({"checkpoint": str(last), "sha256": file_sha256(last), "source": "training replay buffer"})
    else:
        path = args.behaviour if args.quality == "medium" else args.expert
        policy, meta = (expert, expert_meta) if path == args.expert \
            else load_behaviour(path, args.agent, sim, gems, sac)
        mode = collection_mode(args.quality, not args.stochastic)
        actor = NoisyPolicy(policy, args.noise) if mode != "random" else policy
        torch.manual_seed(args.test_seed)  # sampled actions and noise of the measurement: reproducible
        returns_online = policy_returns(sim, actor, args.test_seed, args.test_sessions, mode).cpu().numpy()
        torch.manual_seed(args.test_seed)
        random_online = mean_ci(policy_returns(sim, expert, args.test_seed, args.test_sessions, "random").cpu().numpy())
        if not args.skip_label_check:
            check_label(args.quality, mean_ci(returns_online), random_online, args.label_margin)
        arrays = collect_episodes(sim, actor, encoder, seed, args.episodes, mode, args.batch_size,
                                  progress=not args.no_progress)
        behaviour.update({"checkpoint": str(path), "sha256": file_sha256(path), "mode": mode, "noise": args.noise,
                          "step": meta.get("step"), "val_return": meta.get("val_return"),
                          "random_quality_return": {"mean": random_online["mean"], "ci95": random_online["ci"]},
                          "label_margin": args.label_margin, "label_checked": not args.skip_label_check})
    elapsed = time.perf_counter() - start
    episodes = arrays["reset_slates"].shape[0]
    data_returns = arrays["rewards"].reshape(episodes, -1).sum(axis=1, dtype=np.float64)
    data_stats = mean_ci(data_returns)
    if returns_online is not None:
        s = mean_ci(returns_online)
        behaviour_return = {"mean": s["mean"], "ci95": s["ci"], "std": s["std"], "n": s["n"],
                            "source": f"online, {args.test_sessions} users of test seed {args.test_seed}"}
    else:
        behaviour_return = {"mean": data_stats["mean"], "ci95": data_stats["ci"], "std": data_stats["std"],
                            "n": data_stats["n"], "source": "dataset"}
    center, scale = gems.action_center.cpu().tolist(), gems.action_scale.cpu().tolist()
    metadata = {
        "env": args.env, "env_config": to_dict(c), "quality": args.quality, "episodes": episodes,
        "episode_length": c.episode_length, "slate_size": c.slate_size, "num_items": c.num_items,
        "obs_dim": int(arrays["observations"].shape[1]), "action_dim": int(arrays["actions"].shape[1]),
        "action_center": center, "action_scale": scale, "gems": str(args.gems), "gems_sha256": gems_sha,
        "behaviour": behaviour, "behaviour_return": behaviour_return,
        "dataset_return": {"mean": data_stats["mean"], "ci95": data_stats["ci"], "std": data_stats["std"],
                           "n": data_stats["n"]},
        "state_encoder": {"checkpoint": str(args.expert), "sha256": file_sha256(args.expert),
                          "module": "actor_belief", "step": expert_meta.get("step")},
        "seed": args.seed, "user_seed": seed, "test_seed": args.test_seed, "item_embeddings": table_source,
        "collect_seconds": elapsed, "device": str(sim.device),
    }
    save_dataset(args.output, arrays, metadata)
    n = episodes * c.episode_length
    print(f"wrote {args.output}: {episodes} episodes ({n} transitions) in {elapsed:.1f} s "
          f"({n / max(elapsed, 1e-9):,.0f} transitions/s); dataset return {data_stats['mean']:.2f}, "
          f"behaviour return {behaviour_return['mean']:.2f} +- {behaviour_return['ci95']:.2f}")
