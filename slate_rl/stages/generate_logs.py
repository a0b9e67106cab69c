"""Stage ``generate-logs``: ``data/logs/{env}.npz``, sessions of the epsilon-greedy oracle.

These sessions train MF item embeddings and the GeMS VAE (``slate_rl.data.logs`` documents
the layout). The throughput goes to ``<output stem>.timings.json``, not into the logs' metadata,
so that the same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
import platform

from slate_rl import __version__
from slate_rl.core.config import add_arguments as add_config_arguments
from slate_rl.core.config import from_namespace, to_dict
from slate_rl.core.io import write_timings
from slate_rl.core.stats import mean_ci
from slate_rl.data.logs import LoggedSessions, save_logs
from slate_rl.sim.config import LogsConfig, env_record
from slate_rl.sim.policies import EpsilonGreedyOracle
from slate_rl.sim.rollout import run_sessions
from slate_rl.stages.common import add_env_arguments, simulator_from_args

NAME = "generate-logs"
HELP = "log sessions of the epsilon-greedy oracle (data/logs/{env}.npz)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_env_arguments(parser, embeddings_required=True)
    add_config_arguments(parser, LogsConfig)
    parser.add_argument("--output", required=True, help="destination .npz, e.g. data/logs/focused_topdown.npz")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> None:
    cfg = from_namespace(LogsConfig, args)
    sim, table_source = simulator_from_args(args)
    c = sim.config
    policy = EpsilonGreedyOracle(c.num_items, c.slate_size, cfg.epsilon)
    out = run_sessions(
        sim, policy, cfg.sessions, cfg.seed, batch_size=cfg.batch_size, record=True,
        progress=not args.no_progress, desc=f"logging {args.env}",
    )
    stats = mean_ci(out.returns)
    assert out.slates is not None and out.clicks is not None
    assert out.reset_slates is not None and out.reset_clicks is not None
    metadata = {
        "env": args.env,
        "env_config": env_record(c),
        "item_embeddings": table_source,
        "policy": "eps-greedy",
        "logs_config": to_dict(cfg),
        "return_mean": stats["mean"],
        "return_ci95": stats["ci"],
        "device": str(sim.device),
        "slate_rl_version": __version__,
        "python": platform.python_version(),
    }
    logs = LoggedSessions(
        slates=out.slates, clicks=out.clicks, reset_slates=out.reset_slates, reset_clicks=out.reset_clicks,
        returns=out.returns.astype("float32"), metadata=metadata,
    )
    save_logs(args.output, logs)
    write_timings(args.output, steps_per_second=out.steps_per_second, device=str(sim.device))
    print(
        f"wrote {args.output}: {cfg.sessions} sessions, return {stats['mean']:.2f} +- {stats['ci']:.2f}, "
        f"{out.steps_per_second:,.0f} steps/s on {sim.device}"
    )
