"""Stage ``bench``: ``slate-rl bench sim``, simulator throughput for several batch sizes (see slate_rl.bench.sim)."""

from __future__ import annotations

import argparse
import platform

import torch

from slate_rl.bench.sim import run_benchmark
from slate_rl.core.io import write_json
from slate_rl.stages.common import add_env_arguments, simulator_from_args

NAME = "bench"
HELP = "run a benchmark: sim (simulator steps per second vs batch size)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=("sim",), help="what to benchmark")
    add_env_arguments(parser)
    parser.set_defaults(env="focused_topdown")
    for action in parser._actions:
        if action.dest == "env":
            action.required = False
    parser.add_argument("--batch-sizes", default="1,64,1024,8192", help="comma-separated B values")
    parser.add_argument("--policies", default="random,oracle", help="comma-separated reference policies")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per case (default: 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--output", default=None, help="also write the results as JSON")


def run(args: argparse.Namespace) -> None:

    if args.threads:
        torch.set_num_threads(args.threads)
    sim, _ = simulator_from_args(args)
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    rows = run_benchmark(sim, args.policies.split(","), sizes, args.min_seconds)
    machine = {
        "device": str(sim.device),
        "device_name": torch.cuda.get_device_name(sim.device) if sim.device.type == "cuda" else platform.processor()
        or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(f"# simulator throughput, env {args.env}, {machine}")
    print(f"{'policy':<10} {'B':>6} {'steps/s':>12} {'x B=' + str(sizes[0]):>8}")
    for r in rows:
        print(f"{r['policy']:<10} {r['batch_size']:>6} {r['steps_per_second']:>12,.0f} {r['ratio_to_first']:>8.1f}")
    if args.output:
        write_json(args.output, {"benchmark": "sim", "env": args.env, "machine": machine, "rows": rows})
