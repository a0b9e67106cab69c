"""Stage ``bench``: on-demand benchmarks.

``slate-rl bench sim``: simulator steps/s for several batch sizes (slate_rl.bench.sim);
``slate-rl bench gems``: GeMS training examples/s and the projected paper epoch (slate_rl.bench.gems);
``slate-rl bench online``: SAC+GeMS sessions/s and the projected paper budget (slate_rl.bench.online).
"""

from __future__ import annotations

import argparse
import platform

import torch

from slate_rl.bench import gems as gems_bench
from slate_rl.bench import online as online_bench
from slate_rl.bench.sim import run_benchmark
from slate_rl.core.io import write_json
from slate_rl.stages.common import add_env_arguments, simulator_from_args

NAME = "bench"
HELP = "run a benchmark: sim (simulator steps/s vs batch size), gems (GeMS training), online (SAC+GeMS training)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", choices=("sim", "gems", "online"), help="what to benchmark")
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
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--output", default=None, help="also write the results as JSON")


def run(args: argparse.Namespace) -> None:

    if args.threads:
        torch.set_num_threads(args.threads)
    sim, _ = simulator_from_args(args)
    if args.target == "gems":
        _run_gems(args, sim.device)
        return
    if args.target == "online":
        _run_online(args, sim)
        return
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    rows = run_benchmark(sim, args.policies.split(","), sizes, args.min_seconds)
    machine = _machine(sim.device)
    print(f"# simulator throughput, env {args.env}, {machine}")
    print(f"{'policy':<10} {'B':>6} {'steps/s':>12} {'x B=' + str(sizes[0]):>8}")
    for r in rows:
        print(f"{r['policy']:<10} {r['batch_size']:>6} {r['steps_per_second']:>12,.0f} {r['ratio_to_first']:>8.1f}")
    if args.output:
        write_json(args.output, {"benchmark": "sim", "env": args.env, "machine": machine, "rows": rows})


def _machine(device: torch.device) -> dict[str, object]:
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def _run_gems(args: argparse.Namespace, device: torch.device) -> None:
    rows = gems_bench.run_benchmark(device, args.steps)
    machine = _machine(device)
    print(f"# GeMS training throughput, batch 256, d = 32, {machine}")
    print(f"{'pipeline':<10} {'examples/s':>12} {'10M epoch (min)':>16} {'x baseline':>11}")
    for r in rows:
        print(f"{r['pipeline']:<10} {r['examples_per_second']:>12,.0f} {r['paper_epoch_minutes']:>16.1f} "
              f"{r['speedup_vs_baseline']:>11.2f}")
    if args.output:
        write_json(args.output, {"benchmark": "gems", "machine": machine, "rows": rows})


def _run_online(args: argparse.Namespace, sim: object) -> None:
    rows = online_bench.run_benchmark(sim, args.parallel, args.steps)  # type: ignore[arg-type]
    machine = _machine(sim.device)  # type: ignore[attr-defined]
    print(f"# SAC+GeMS online training (simulation + updates, batch 20 episodes), {machine}")
    print(f"{'schedule':<18} {'sessions/s':>11} {'100k budget (h)':>16} {'x paper':>8}")
    for r in rows:
        print(f"{r['schedule']:<18} {r['sessions_per_second']:>11.2f} {r['projected_paper_budget_hours']:>16.2f} "
              f"{r['speedup_vs_paper_schedule']:>8.2f}")
    if args.output:
        write_json(args.output, {"benchmark": "online", "machine": machine, "rows": rows})
