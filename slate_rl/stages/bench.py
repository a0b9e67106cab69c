"""Stage ``bench``: on-demand benchmarks.

``slate-rl bench sim``: simulator steps/s for several batch sizes (slate_rl.bench.sim);
``slate-rl bench gems``: GeMS training examples/s and the projected paper epoch (slate_rl.bench.gems);
``slate-rl bench online``: SAC+GeMS sessions/s and the projected paper budget (slate_rl.bench.online);
``slate-rl bench offline``: offline RL updates/s against a CORL-style loop (slate_rl.bench.offline);
``slate-rl bench threads``: concurrent offline jobs (CPU), oversubscribed threads against one per core.
"""

from __future__ import annotations

import argparse
import platform
from typing import Any

import torch

from slate_rl.bench import gems as gems_bench
from slate_rl.bench import offline as offline_bench
from slate_rl.bench import online as online_bench
from slate_rl.bench.sim import run_benchmark
from slate_rl.core.device import resolve_device
from slate_rl.core.io import write_json
from slate_rl.stages.common import add_env_arguments, positive_int, simulator_from_args

NAME = "bench"
HELP = ("run a benchmark: sim (simulator steps/s vs batch size), gems (GeMS training), online (SAC+GeMS training), "
        "offline (offline RL updates), threads (concurrent jobs' CPU threads)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=("sim", "gems", "online", "offline", "threads"), help="what to benchmark")
    add_env_arguments(parser)
    parser.set_defaults(env="focused_topdown")
    for action in parser._actions:
        if action.dest == "env":
            action.required = False
    parser.add_argument("--batch-sizes", default="1,64,1024,8192", help="comma-separated B values")
    parser.add_argument("--policies", default="random,oracle", help="comma-separated reference policies")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="timed seconds per case (default: 2)")
    parser.add_argument("--steps", type=int, default=200, help="gems/online: timed training steps per pipeline")
    parser.add_argument("--parallel", type=int, default=10, help="online: sessions per step of the parallel schedule")
    parser.add_argument("--algos", default="td3bc,cql,iql,bc", help="offline, threads: comma-separated algorithms")
    parser.add_argument("--processes", type=positive_int, default=2, help="threads: concurrent jobs (default: 2)")
    parser.add_argument("--output", default=None, help="also write the results as JSON")


# (header, row key, format spec) of each benchmark's table
_COLUMNS: dict[str, list[tuple[str, str, str]]] = {
    "sim": [("policy", "policy", "<10"), ("B", "batch_size", ">6"), ("steps/s", "steps_per_second", ">12,.0f"),
            ("x first B", "ratio_to_first", ">10.1f")],
    "gems": [("pipeline", "pipeline", "<10"), ("examples/s", "examples_per_second", ">12,.0f"),
             ("10M epoch (min)", "paper_epoch_minutes", ">16.1f"), ("x baseline", "speedup_vs_baseline", ">11.2f")],
    "online": [("schedule", "schedule", "<18"), ("sessions/s", "sessions_per_second", ">11.2f"),
               ("100k budget (h)", "projected_paper_budget_hours", ">16.2f"),
               ("x paper", "speedup_vs_paper_schedule", ">8.2f")],
    "offline": [("algo", "algo", "<6"), ("updates/s", "steps_per_second", ">10.1f"),
                ("CORL-style/s", "reference_steps_per_second", ">13.1f"), ("x CORL", "speedup_vs_reference", ">7.2f"),
                ("GFLOP/update", "gflop_per_update", ">13.3f"), ("GFLOP/s", "gflop_per_second", ">8.1f")],
    "threads": [("algo", "algo", "<6"), ("setting", "setting", "<23"), ("jobs", "processes", ">5"),
                ("threads/job", "threads_per_process", ">12"), ("updates/s", "steps_per_second", ">10.1f"),
                ("x oversubscribed", "ratio_to_oversubscribed", ">17.2f")],
}


def run(args: argparse.Namespace) -> None:
    if args.target == "offline":
        device = resolve_device(args.device)
        rows = offline_bench.run_benchmark(device, args.min_seconds, args.algos.split(","))
        title = ("offline RL updates, batch 256, obs 20, action 32, 1M synthetic transitions, best of 3 rounds; "
                 f"matmul peak {offline_bench.matmul_gflop_per_second(device):.0f} GFLOP/s")
        _report(args.target, title, _machine(device), rows, args.output)
        return
    if args.target == "threads":
        rows = offline_bench.run_threads_benchmark(args.algos.split(","), args.processes, args.min_seconds)
        title = (f"{args.processes} concurrent offline jobs on {rows[0]['cores']} cores (CPU), total updates/s, "
                 "batch 256, best of 2 alternating rounds")
        _report(args.target, title, _machine(torch.device("cpu")), rows, args.output)
        return
    sim, _ = simulator_from_args(args)
    if args.target == "gems":
        title = "GeMS training throughput, batch 256, d = 32"
        rows = gems_bench.run_benchmark(sim.device, args.steps)
    elif args.target == "online":
        title = "SAC+GeMS online training (simulation + updates, batch 20 episodes)"
        rows = online_bench.run_benchmark(sim, args.parallel, args.steps)
    else:
        title = f"simulator throughput, env {args.env}"
        sizes = [int(x) for x in args.batch_sizes.split(",")]
        rows = run_benchmark(sim, args.policies.split(","), sizes, args.min_seconds)
    _report(args.target, title, _machine(sim.device), rows, args.output)


def _report(target: str, title: str, machine: dict[str, object], rows: list[dict[str, Any]],
            output: str | None) -> None:
    """Print the table of a benchmark (and write it as JSON with the machine it ran on)."""
    columns = _COLUMNS[target]
    print(f"# {title}, {machine}")
    print(" ".join(f"{h:{fmt.split(',')[0].split('.')[0]}}" for h, _, fmt in columns))
    for r in rows:
        print(" ".join(f"{r[key]:{fmt}}" for _, key, fmt in columns))
    if output:
        write_json(output, {"benchmark": target, "title": title, "machine": machine, "rows": rows})


def _machine(device: torch.device) -> dict[str, object]:
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
