"""Stage ``bench``: on-demand benchmarks.

``slate-rl bench sim``: simulator steps/s for several batch sizes (slate_rl.bench.sim);
``slate-rl bench gems``: GeMS training examples/s and the projected paper epoch (slate_rl.bench.gems);
``slate-rl bench online``: SAC+GeMS sessions/s and the projected paper budget (slate_rl.bench.online); with
``--seeds 1,10``: seed-sessions/s of 1 and 10 seeds trained together in one process and the projected hours of
the paper's 10-seed protocol (slate_rl.bench.multiseed);
``slate-rl bench sac-update``: ms per SAC+GeMS gradient step, fused CPU GRU unroll against nn.GRU;
``slate-rl bench offline``: offline RL updates/s against a CORL-style loop and acting latency for 500 users
(slate_rl.bench.offline);
``slate-rl bench threads``: concurrent offline jobs (CPU), oversubscribed threads against one per core;
``slate-rl bench sequence``: Decision Transformer / Decision Diffuser updates/s (DT against a CORL-style
loop) and decision latency for 500 users (slate_rl.bench.sequence);
``slate-rl bench conditioning``: a trained DT/DD policy's test return at several target returns
(``--policy``, ``--gems``, ``--expert``, ``--targets``; slate_rl.bench.sequence).
"""

from __future__ import annotations

import argparse
import json
import platform
from typing import Any

import torch

from slate_rl.bench import gems as gems_bench
from slate_rl.bench import multiseed as multiseed_bench
from slate_rl.bench import offline as offline_bench
from slate_rl.bench import online as online_bench
from slate_rl.bench import sequence as sequence_bench
from slate_rl.bench.sim import run_benchmark
from slate_rl.core.artifacts import TEST_SEED
from slate_rl.core.config import from_dict
from slate_rl.core.device import resolve_device
from slate_rl.core.errors import ConfigError
from slate_rl.core.io import write_json
from slate_rl.offline.dd import DDConfig
from slate_rl.offline.registry import TD_ALGOS
from slate_rl.stages.common import add_env_arguments, finite_float, positive_int, simulator_from_args

NAME = "bench"
HELP = ("run a benchmark: sim (simulator steps/s vs batch size), gems (GeMS training), online (SAC+GeMS training), "
        "sac-update (one SAC gradient step), offline (offline RL updates), threads (concurrent jobs' CPU threads), "
        "sequence (DT/DD updates and decision latency), conditioning (a DT/DD policy's return at several targets)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", help="what to benchmark",
                        choices=("sim", "gems", "online", "sac-update", "offline", "threads", "sequence",
                                 "conditioning"))
    add_env_arguments(parser)
    parser.set_defaults(env="focused_topdown")
    for action in parser._actions:
        if action.dest == "env":
            action.required = False
    parser.add_argument("--batch-sizes", default="1,64,1024,8192", help="comma-separated B values")
    parser.add_argument("--policies", default="random,oracle", help="comma-separated reference policies")
    parser.add_argument("--min-seconds", type=finite_float, default=2.0, help="timed seconds per case (default: 2)")
    parser.add_argument("--steps", type=int, default=200, help="gems/online: timed training steps per pipeline")
    parser.add_argument("--parallel", type=int, default=10, help="online: sessions per step of the parallel schedule")
    parser.add_argument("--seeds", default=None,
                        help="online: comma-separated numbers of seeds trained together in one process (e.g. 1,10): "
                        "seed-sessions/s per number of seeds instead of the single-seed benchmark")
    parser.add_argument("--algos", default=",".join(TD_ALGOS),
                        help="offline, threads: comma-separated algorithms")
    parser.add_argument("--processes", type=positive_int, default=2, help="threads: concurrent jobs (default: 2)")
    parser.add_argument("--users", type=int, default=500, help="sequence: users acting in parallel (default: 500)")
    parser.add_argument("--dd-config", type=json.loads, default=None,
                        help="sequence: Decision Diffuser settings to change, JSON (e.g. '{\"dim\": 32}')")
    parser.add_argument("--strided", type=int, default=20, help="sequence: strided DDIM steps (default: 20)")
    parser.add_argument("--policy", default=None, help="conditioning: a trained dt/dd policy (.pt)")
    parser.add_argument("--gems", default=None, help="conditioning: the policy's dataset's GeMS checkpoint")
    parser.add_argument("--expert", default=None, help="conditioning: the dataset's state encoder (best.ckpt)")
    parser.add_argument("--targets", default="0.5,0.75,1.0",
                        help="conditioning: target returns, multiples of the method's normalised maximum")
    parser.add_argument("--sampling-steps", default=None,
                        help="conditioning: comma-separated Decision Diffuser sampling steps to compare")
    parser.add_argument("--test-seed", type=int, default=TEST_SEED, help="conditioning: seed of the fixed test users")
    parser.add_argument("--test-sessions", type=int, default=500, help="conditioning: test users")
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
    "online-seeds": [("seeds", "seeds", ">5"), ("schedule", "schedule", "<14"),
                     ("seed-sessions/s", "seed_sessions_per_second", ">16.2f"),
                     ("10 seeds x 100k (h)", "projected_10_seed_hours", ">20.2f"),
                     ("x first", "speedup_vs_first", ">8.2f")],
    "sac-update": [("GRU unroll", "gru", "<11"), ("ms/update", "ms_per_update", ">10.2f"),
                   ("updates/s", "updates_per_second", ">10.1f"), ("x nn.GRU", "speedup_vs_nn_gru", ">9.2f")],
    "sequence": [("case", "case", "<26"), ("value", "value", ">11.2f"), ("unit", "unit", "<20"),
                 ("reference", "reference", ">10.2f"), ("ratio", "ratio", ">7.2f"), ("note", "note", "<")],
    "conditioning": [("sampling", "sampling", "<9"), ("target", "target", ">7.2f"), ("return", "return_mean", ">8.2f"),
                     ("+- 95% CI", "return_ci95", ">10.2f"), ("n", "n", ">5"),
                     ("vs previous", "vs_previous", ">12.2f"), ("+- paired CI", "vs_previous_ci95", ">13.2f"),
                     ("worst vs lower", "worst_vs_lower", ">15.2f"), ("+- paired CI", "worst_vs_lower_ci95", ">13.2f"),
                     ("seconds", "seconds", ">8.1f")],
    "offline": [("algo", "algo", "<6"), ("updates/s", "steps_per_second", ">10.1f"),
                ("CORL-style/s", "reference_steps_per_second", ">13.1f"), ("x CORL", "speedup_vs_reference", ">7.2f"),
                ("GFLOP/update", "gflop_per_update", ">13.3f"), ("GFLOP/s", "gflop_per_second", ">8.1f"),
                ("act ms (500 users)", "act_ms", ">19.2f")],
    "threads": [("algo", "algo", "<6"), ("setting", "setting", "<23"), ("jobs", "processes", ">5"),
                ("threads/job", "threads_per_process", ">12"), ("updates/s", "steps_per_second", ">10.1f"),
                ("x oversubscribed", "ratio_to_oversubscribed", ">17.2f")],
}


def run(args: argparse.Namespace) -> None:
    if args.target == "offline":
        device = resolve_device(args.device)
        rows = offline_bench.run_benchmark(device, args.min_seconds, args.algos.split(","))
        title = ("offline RL updates, batch 256, obs 20, action 32, 1M synthetic transitions, best of 3 rounds "
                 "(CORL-style columns for the methods CORL has); acting: one call for 500 users; "
                 f"matmul peak {offline_bench.matmul_gflop_per_second(device):.0f} GFLOP/s")
        _report(args.target, title, _machine(device), rows, args.output)
        return
    if args.target == "sac-update":
        device = resolve_device(args.device)
        rows = online_bench.run_update_benchmark(device, args.min_seconds)
        _report(args.target, "SAC+GeMS gradient step, batch 20 episodes x 100 steps, d = 32, best of 2 rounds",
                _machine(device), rows, args.output)
        return
    if args.target == "threads":
        rows = offline_bench.run_threads_benchmark(args.algos.split(","), args.processes, args.min_seconds)
        title = (f"{args.processes} concurrent offline jobs on {rows[0]['cores']} cores (CPU), total updates/s, "
                 "batch 256, best of 2 alternating rounds")
        _report(args.target, title, _machine(torch.device("cpu")), rows, args.output)
        return
    if args.target == "sequence":
        device = resolve_device(args.device)
        dd = from_dict(DDConfig, args.dd_config or {}, "dd")
        rows = sequence_bench.run_benchmark(device, args.min_seconds, args.users, dd=dd, strided=args.strided)
        _report(args.target, "sequence methods: synthetic 100-step sessions, obs 20, action 32; DT at CORL's "
                "settings, DD U-Net as configured", _machine(device), rows, args.output)
        return
    sim, _ = simulator_from_args(args)
    if args.target == "conditioning":
        _conditioning(args, sim)
        return
    if args.target == "gems":
        title = "GeMS training throughput, batch 256, d = 32"
        rows = gems_bench.run_benchmark(sim.device, args.steps)
    elif args.target == "online" and args.seeds:
        counts = _positive_ints(args.seeds)
        title = ("SAC+GeMS online training, seeds trained together in one process (simulation + updates, batch 20 "
                 "episodes)")
        rows = multiseed_bench.run_benchmark(sim, counts, args.parallel, args.steps)
        _report("online-seeds", title, _machine(sim.device), rows, args.output)
        return
    elif args.target == "online":
        title = "SAC+GeMS online training (simulation + updates, batch 20 episodes)"
        rows = online_bench.run_benchmark(sim, args.parallel, args.steps)
    else:
        title = f"simulator throughput, env {args.env}"
        sizes = _positive_ints(args.batch_sizes, "--batch-sizes")
        rows = run_benchmark(sim, args.policies.split(","), sizes, args.min_seconds)
    _report(args.target, title, _machine(sim.device), rows, args.output)


def _positive_ints(text: str, option: str = "--seeds") -> list[int]:
    try:
        counts = [int(v) for v in text.split(",")]
    except ValueError as exc:
        raise ConfigError(f"{option} must be comma-separated positive integers, got {text!r}") from exc
    if not counts or min(counts) < 1:
        raise ConfigError(f"{option} must be comma-separated positive integers, got {text!r}")
    return counts


def _conditioning(args: argparse.Namespace, sim: Any) -> None:
    for key in ("policy", "gems", "expert"):
        if getattr(args, key) is None:
            raise ConfigError(f"bench conditioning needs --{key}")
    targets = sequence_bench.parse_targets(args.targets)
    settings: list[int | None] = [None]
    if args.sampling_steps:
        try:
            settings = [int(v) for v in args.sampling_steps.split(",")]
        except ValueError as exc:
            raise ConfigError(f"--sampling-steps must be comma-separated integers, got "
                              f"{args.sampling_steps!r}") from exc
    rows: list[dict[str, Any]] = []
    verdicts: dict[str, str] = {}
    for steps in settings:
        policy, meta = sequence_bench.load_sequence_policy(args.policy, sim, args.gems, args.expert, steps)
        group = sequence_bench.return_conditioning(sim, policy, targets, args.test_seed, args.test_sessions)
        sampling = "default" if steps is None else str(steps)
        verdicts[sampling] = sequence_bench.conditioning_verdict(group)
        rows.extend({"sampling": sampling, **row} for row in group)
    title = (f"return conditioning of {meta['algo']} on {meta['env']}/{meta['quality']} (seed {meta['seed']}), "
             f"targets x the method's normalised maximum")
    _report(args.target, title, _machine(sim.device), rows, args.output, {"verdict": verdicts})
    for sampling, verdict in verdicts.items():
        print(f"# sampling {sampling}: {verdict}")


def _report(target: str, title: str, machine: dict[str, object], rows: list[dict[str, Any]],
            output: str | None, extra: dict[str, Any] | None = None) -> None:
    """Print the table of a benchmark (and write it as JSON with the machine it ran on)."""
    columns = _COLUMNS[target]
    print(f"# {title}, {machine}")
    print(" ".join(f"{h:{fmt.split(',')[0].split('.')[0]}}" for h, _, fmt in columns))
    for r in rows:
        print(" ".join(_cell(r.get(key), fmt) for _, key, fmt in columns))
    if output:
        write_json(output, {"benchmark": target, "title": title, "machine": machine, "rows": rows, **(extra or {})})


def _cell(value: Any, fmt: str) -> str:
    """``value`` formatted with ``fmt``; a missing value (a row without that measurement) as a dash."""
    if value is None:
        return f"{'-':{fmt.split('.')[0].rstrip('fd')}}"
    return f"{value:{fmt}}"


def _machine(device: torch.device) -> dict[str, object]:
    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
