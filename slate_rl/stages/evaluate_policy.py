"""Stage ``evaluate-policy``: the return of a reference policy, to sanity-check an environment.

Prints one JSON object (``return_mean``, ``return_std``, ``return_ci95`` half-width,
``n_sessions``, ``steps_per_second`` ...), and writes it to ``--output`` when given (the
timing apart, in ``<output stem>.timings.json``, so that the result is the same bytes on every run).
"""

from __future__ import annotations

import argparse
import json

from slate_rl.core.io import write_json, write_timings
from slate_rl.core.stats import mean_ci
from slate_rl.sim.policies import POLICY_NAMES, make_policy
from slate_rl.sim.rollout import run_sessions
from slate_rl.stages.common import (
    add_env_arguments,
    check_fraction,
    finite_float,
    simulator_from_args,
    size_int,
)

NAME = "evaluate-policy"
HELP = "evaluate a reference policy (random, oracle, eps-greedy) and print its return as JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_env_arguments(parser)
    parser.add_argument("--policy", required=True, choices=POLICY_NAMES, help="reference policy")
    parser.add_argument("--epsilon", type=finite_float, default=0.5,
                        help="exploration rate of eps-greedy (default: 0.5)")
    parser.add_argument("--sessions", type=size_int("sessions"), default=1000,
                        help="sessions to simulate (default: 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the users and the policy (default: 0)")
    parser.add_argument("--batch-size", type=size_int("batch_size"), default=8192,
                        help="users in parallel (default: 8192)")
    parser.add_argument("--output", default=None, help="also write the JSON object to this file")


def run(args: argparse.Namespace) -> None:
    check_fraction("epsilon", args.epsilon)
    sim, table_source = simulator_from_args(args)
    c = sim.config
    policy = make_policy(args.policy, c.num_items, c.slate_size, args.epsilon)
    out = run_sessions(sim, policy, args.sessions, args.seed, batch_size=args.batch_size)
    stats = mean_ci(out.returns)
    result = {
        "env": args.env,
        "policy": args.policy,
        "epsilon": args.epsilon if args.policy == "eps-greedy" else None,
        "return_mean": stats["mean"],
        "return_std": stats["std"],
        "return_ci95": stats["ci"],
        "n_sessions": stats["n"],
        "seed": args.seed,
        "device": str(sim.device),
        "item_embeddings": table_source,
    }
    if args.output:
        write_json(args.output, result)
        write_timings(args.output, steps_per_second=out.steps_per_second, device=str(sim.device))
    print(json.dumps({**result, "steps_per_second": out.steps_per_second}))
