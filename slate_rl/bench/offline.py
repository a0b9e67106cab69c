"""Offline RL update throughput: gradient steps per second of TD3+BC, CQL, IQL and BC at batch 256.

Two implementations of each algorithm on the same synthetic data (1M transitions, 20-d states,
32-d actions in [-1, 1]), device and thread count, measured in the same run:

* ``slate_rl``: :func:`slate_rl.offline.registry.make_algo` with its default (CORL) config, batches
  drawn by a ``torch.randint`` index on the device;
* ``reference``: eager loops in the style of the CORL single-file implementations, written in
  :mod:`slate_rl.bench.corl_reference` from their behaviour (not their code): for TD3+BC and IQL the
  structure of CORL's ``algorithms/offline/td3_bc.py`` and ``iql.py`` step for step (TD3+BC: separate Q1/Q2 modules
  and optimisers, (B, 1) targets; IQL: a ``TwinQ`` with one concatenation, a value, a critic and an
  actor step each with its own backward pass, ``torch.distributions.Normal`` policy), ``.item()``
  on every logged loss, Python-loop soft updates, default ``torch.optim.Adam``, and
  ``np.random.randint`` indices into the device buffer with a ``.to(device)`` of the batch at every
  step (CORL's ``ReplayBuffer.sample`` and training loop; ``wandb.log`` costs nothing here).

Both sides use the same architectures and hyperparameters (and compute the same numbers: see
``tests/test_offline_algos.py``). The timings alternate between the two sides for ``rounds`` rounds
and keep each side's best round, so that a machine shared with other work penalises neither side.
Each row also gives the matmul work of one update (``torch.utils.flop_counter``, forward and
backward) and the rate at which our side performs it: near the machine's matmul peak, an update
cannot get faster without doing less arithmetic.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from slate_rl.bench.corl_reference import CORL_ALGOS, reference_step
from slate_rl.bench.shapes import ACTION_DIM, BATCH_SIZE, GAMMA, OBS_DIM
from slate_rl.core.device import available_cpus
from slate_rl.offline.registry import TD_ALGOS, make_algo

WARMUP_STEPS = 3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_data(n: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    data = {
        "observations": torch.randn(n, OBS_DIM, generator=g),
        "actions": torch.rand(n, ACTION_DIM, generator=g) * 2 - 1,
        "rewards": torch.rand(n, generator=g),
        "next_observations": torch.randn(n, OBS_DIM, generator=g),
        "dones": (torch.rand(n, generator=g) < 0.01).float(),
    }
    return {k: v.to(device) for k, v in data.items()}


def slate_rl_step(name: str, data: dict[str, torch.Tensor], device: torch.device, total_steps: int
                  ) -> Callable[[], Any]:
    """One step of our loop's shape: a device-side index, ``algo.update`` (metrics stay on the device)."""
    algo = make_algo(name, OBS_DIM, torch.zeros(ACTION_DIM), torch.ones(ACTION_DIM), GAMMA, total_steps).to(device)
    size = data["observations"].shape[0]

    def step() -> Any:
        idx = torch.randint(0, size, (BATCH_SIZE,), device=device)
        return algo.update({k: v[idx] for k, v in data.items()})

    return step


def steps_per_second(step: Callable[[], Any], device: torch.device, min_seconds: float) -> float:
    """Steps per second of ``step`` over at least ``min_seconds`` (and at least one step)."""
    _sync(device)
    start, done = time.perf_counter(), 0
    while True:
        step()
        done += 1
        if done % 5 == 0 or device.type != "cuda":
            _sync(device)
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                return done / elapsed


def matmul_gflop_per_second(device: torch.device, seconds: float = 0.5) -> float:
    """The machine's rate on the updates' typical matmul, (2048 x 256) @ (256 x 256) in float32."""
    a, b = torch.randn(2048, 256, device=device), torch.randn(256, 256, device=device)
    rate = steps_per_second(lambda: a @ b, device, seconds)
    return rate * 2 * 2048 * 256 * 256 / 1e9


def gflop_per_update(step: Callable[[], Any], updates: int = 2) -> float:
    """Matmul GFLOP of one update (averaged over ``updates``: TD3+BC's actor steps every other update)."""
    counter = FlopCounterMode(display=False)
    with counter:
        for _ in range(updates):
            step()
    return counter.get_total_flops() / updates / 1e9


def act_ms(name: str, device: torch.device, users: int = 500, calls: int = 5) -> float:
    """Milliseconds of one ``act`` call for ``users`` states (an evaluation step of 500 test users), best of
    ``calls``; the algorithm is freshly built (acting costs the same before and after training)."""
    algo = make_algo(name, OBS_DIM, torch.zeros(ACTION_DIM), torch.ones(ACTION_DIM), GAMMA, 1).to(device)
    obs = torch.randn(users, OBS_DIM, device=device)
    algo.act(obs)
    best = math.inf
    for _ in range(calls):
        _sync(device)
        start = time.perf_counter()
        algo.act(obs)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 1000 * best


def run_benchmark(device: torch.device, min_seconds: float, algos: list[str] | None = None, rounds: int = 3,
                  n_transitions: int = 1_000_000) -> list[dict[str, Any]]:
    """Updates/s of each algorithm, beside the CORL-style loop's for the methods CORL has (None otherwise),
    matmul GFLOP per update and the acting latency for 500 users."""
    data = synthetic_data(n_transitions, device)
    total_steps = 1_000_000
    rows = []
    for name in algos or list(TD_ALGOS):
        torch.manual_seed(0)
        np.random.seed(0)
        ours = slate_rl_step(name, data, device, total_steps)
        ref = reference_step(name, data, device, total_steps) if name in CORL_ALGOS else None
        for _ in range(WARMUP_STEPS):
            ours()
            if ref is not None:
                ref()
        gflop = gflop_per_update(ours)
        rates: dict[str, list[float]] = {"ours": [], "ref": []}
        for _ in range(rounds):
            rates["ours"].append(steps_per_second(ours, device, min_seconds / rounds))
            if ref is not None:
                rates["ref"].append(steps_per_second(ref, device, min_seconds / rounds))
        best = max(rates["ours"])
        best_ref = max(rates["ref"]) if ref is not None else None
        rows.append({"algo": name, "steps_per_second": best, "reference_steps_per_second": best_ref,
                     "speedup_vs_reference": best / best_ref if best_ref else None, "gflop_per_update": gflop,
                     "reference_gflop_per_update": gflop_per_update(ref) if ref is not None else None,
                     "gflop_per_second": gflop * best, "act_ms": act_ms(name, device), "rounds": rates})
    return rows


# ----------------------------------------------------------------------------------------------
# Concurrent jobs: oversubscribed OpenMP threads against one thread per core
# ----------------------------------------------------------------------------------------------
def _concurrent_worker(name: str, threads: int, seconds: float, n_transitions: int, barrier: Any, results: Any
                       ) -> None:
    """One of the concurrent jobs: ``threads`` torch threads, warm up, wait for the others, time updates."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device("cpu")
    step = slate_rl_step(name, synthetic_data(n_transitions, device), device, 1_000_000)
    for _ in range(WARMUP_STEPS):
        step()
    barrier.wait()
    results.put(steps_per_second(step, device, seconds))


def concurrent_updates_per_second(name: str, processes: int, threads: int, seconds: float,
                                  n_transitions: int = 100_000, env: dict[str, str | None] | None = None) -> float:
    """Total updates/s of ``processes`` concurrent CPU jobs training ``name``, each with ``threads`` threads
    (``env``: extra environment variables of the jobs, read by their OpenMP runtime when torch loads)."""
    ctx = mp.get_context("spawn")  # a fork would inherit this process's OpenMP pool
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    workers = [ctx.Process(target=_concurrent_worker, args=(name, threads, seconds, n_transitions, barrier, results))
               for _ in range(processes)]
    saved = {k: os.environ.get(k) for k in env or {}}
    for k, v in (env or {}).items():  # None: unset (the OpenMP runtime's own default)
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        for w in workers:
            w.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    rates = [results.get(timeout=600) for _ in workers]
    for w in workers:
        w.join()
    return float(sum(rates))


def run_threads_benchmark(algos: list[str], processes: int, min_seconds: float, rounds: int = 2
                          ) -> list[dict[str, Any]]:
    """Jobs sharing the CPU: each with every core's worth of threads (what a job did before it honoured
    its rule's ``threads``), the same with OpenMP's passive wait policy (idle threads sleep instead of
    spinning, what ``slate-rl`` sets unless ``OMP_WAIT_POLICY`` is set), ``cores // processes`` threads each
    (what ``--threads {threads}`` gives), and one job alone with every core, spinning and passive (the cost
    of the passive policy on an idle machine).

    The settings alternate for ``rounds`` rounds and each keeps its best, so that other load on a
    shared machine penalises none of them; ratios are against the oversubscribed setting.
    """
    cores = available_cpus()
    spin: dict[str, str | None] = {"OMP_WAIT_POLICY": None}  # OpenMP's default: idle threads spin a while
    passive: dict[str, str | None] = {"OMP_WAIT_POLICY": "PASSIVE"}  # what slate-rl sets (cli.main)
    settings: list[tuple[str, int, int, dict[str, str | None]]] = [
        ("oversubscribed", processes, cores, spin),
        ("oversubscribed, passive", processes, cores, passive),
        ("threads = cores / jobs", processes, max(1, cores // processes), passive),
        ("one job alone", 1, cores, spin),
        ("one job alone, passive", 1, cores, passive),
    ]
    rows = []
    for name in algos:
        rates: dict[str, list[float]] = {label: [] for label, *_ in settings}
        for _ in range(rounds):
            for label, n, threads, env in settings:
                rates[label].append(concurrent_updates_per_second(name, n, threads, min_seconds / rounds, env=env))
        base = max(rates["oversubscribed"])
        for label, n, threads, env in settings:
            best = max(rates[label])
            rows.append({"algo": name, "setting": label, "processes": n, "threads_per_process": threads,
                         "env": env, "cores": cores, "steps_per_second": best,
                         "ratio_to_oversubscribed": best / base, "rounds": rates[label]})
    return rows
