"""The one offline training loop: dataset in the replay buffer, batches, guard, evaluation, resume.

Every algorithm (:mod:`slate_rl.offline.registry`) is a loss module with ``update(batch)``; this
loop owns everything else, for both families; the batches come from the algorithm's ``sampler``: TD
methods get transitions (:func:`~slate_rl.offline.base.sample_batch`), sequence methods
(:class:`~slate_rl.offline.sequence.SequenceAlgo`) fit their dataset statistics once and get windows of
sessions from their own ``sample``:

* the dataset lives in the :class:`~slate_rl.data.buffer.EpisodeBuffer` (whole episodes, so
  sequence methods can sample sessions from the same object); states are normalised once, in
  place, with the dataset's mean and std (``normalize_states``), and rewards scaled by
  ``reward_scale`` at sampling;
* ``dones`` are 1 at the last step of a session unless ``bootstrap_timeout`` (the same
  convention as the online agents: the paper's SAC treats the time limit as terminal);
* the **divergence guard**: every step, on the device, each metric is checked for NaN/inf and
  every Q-like metric (name starting with ``q``) against ``q_limit``; the first step at which a
  quantity fails is recorded without a host sync and checked every ``log_interval`` steps, when
  the run stops with :class:`DivergenceError` naming the quantity and the step;
* validation every ``eval_interval`` steps on ``val_sessions`` fixed users (the learning
  curve; a callback that also returns diagnostics, :mod:`slate_rl.offline.diagnostics`, has them
  recorded beside the curve, logged and checkpointed), and ``last`` checkpoints every
  ``checkpoint_interval`` steps: algorithm, optimisers, counters, RNG states, curve and
  diagnostics; a rerun resumes and ends bit-identical to an uninterrupted run.

The policy reported is the final one (offline RL selects no checkpoint on online returns).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from slate_rl.core.errors import SlateRLError
from slate_rl.core.io import curve_from_tensor, curve_tensor, load_resume, save_resume
from slate_rl.core.logger import RunLogger
from slate_rl.core.rng import cuda_devices
from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.offline.base import Normalizer, OfflineAlgo
from slate_rl.offline.config import OfflineConfig

Validation = Callable[[], float | tuple[float, dict[str, float | None]]]
"""A validation callback: the validation return, or the return and its diagnostics
(:class:`~slate_rl.offline.diagnostics.Diagnostics`)."""


def record_validation(state: OfflineState, step: int, outcome: float | tuple[float, dict[str, float | None]],
                      logger: RunLogger | None, prefix: str = "") -> float:
    """Append a validation's outcome to ``state`` (curve, diagnostics) and the logger; return the return."""
    val, diag = outcome if isinstance(outcome, tuple) else (outcome, None)
    state.curve.append([step, val])
    logged = {f"{prefix}val_return": val}
    if diag is not None:
        state.diagnostics.append([step, diag])
        logged.update({f"{prefix}diag/{k}": v for k, v in diag.items() if v is not None})
    if logger is not None:
        logger.log(logged, step=step)
    return val


class DivergenceError(SlateRLError):
    """A loss or a Q value became NaN/inf or exceeded the limit."""


@dataclass
class OfflineState:
    """Counters of an offline run (saved in the resume checkpoint, all but ``train_seconds``)."""

    step: int = 0
    curve: list[list[float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    diagnostics: list[list[Any]] = field(default_factory=list)
    """``[step, {name: value or None}]`` per validation whose callback returned diagnostics
    (:mod:`slate_rl.offline.diagnostics`)."""
    train_seconds: float = 0.0
    """Wall-clock seconds this process spent in the loop (a resumed run: since it resumed). Not in the
    checkpoint, which holds no wall-clock figure: the same run gives the same checkpoint bytes."""


def prepare_buffer(buffer: EpisodeBuffer, normalizer: Normalizer, normalize: bool) -> None:
    """Fit the normaliser on the dataset's states and normalise the buffer's states in place."""
    if "observations" not in buffer.data or "next_observations" not in buffer.data:
        raise ValueError("the buffer needs 'observations' and 'next_observations' extras (OfflineDataset.to_buffer)")
    if normalize:
        normalizer.fit(buffer.data["observations"][: buffer.size].flatten(0, 1))
    for key in ("observations", "next_observations"):
        buffer.data[key] = normalizer(buffer.data[key])


class Guard:
    """First step at which each metric (a 0-d tensor) became non-finite or a Q exceeded the limit, kept on
    the device (no host sync per update)."""

    def __init__(self, q_limit: float) -> None:
        self.q_limit = q_limit
        self.names: list[str] | None = None
        self.first_bad: Tensor | None = None
        self.is_q: Tensor | None = None

    def observe(self, step: int, metrics: dict[str, Tensor]) -> None:
        if self.names is None:
            self.names = list(metrics)
        values = torch.stack([metrics[n].detach().float() for n in self.names])
        if self.first_bad is None or self.is_q is None:
            self.first_bad = torch.full(values.shape, -1, dtype=torch.int64, device=values.device)
            self.is_q = torch.tensor([n.startswith("q") for n in self.names], device=values.device)
        bad = ~torch.isfinite(values) | (self.is_q & (values.abs() > self.q_limit))
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)

    def failure(self) -> tuple[int, str] | None:
        """The first (step, metric) that failed, or None."""
        if self.first_bad is None or self.names is None:
            return None
        return min(((s, n) for s, n in zip(self.first_bad.tolist(), self.names, strict=True) if s >= 0),
                   default=None)

    def check(self, algo: str) -> None:
        hit = self.failure()
        if hit is not None:
            step, name = hit
            raise DivergenceError(
                f"{algo} diverged: {name} became non-finite or exceeded |{self.q_limit:g}| at step {step}; lower "
                "offline.gamma or offline.reward_scale, or the learning rates (see the run's log for Q statistics)")


def train_offline(
    algo: OfflineAlgo,
    buffer: EpisodeBuffer,
    cfg: OfflineConfig,
    seed: int,
    validate: Validation,
    last_path: str | os.PathLike[str],
    logger: RunLogger | None = None,
    progress: bool = True,
    fingerprint: str = "",
) -> OfflineState:
    """Train ``algo`` on ``buffer`` (states already prepared) for ``cfg.total_steps`` steps.

    ``fingerprint`` identifies the run's inputs and settings: a resume checkpoint written under
    another fingerprint is ignored (the run starts over) instead of resuming a different run.
    """
    state = OfflineState()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    sample = algo.sampler(buffer, cfg, generator)
    last = Path(last_path)
    refused = _load_last(last, algo, state, generator, fingerprint) if last.is_file() else None
    if refused:
        print(f"{last}: {refused}; starting over")
    guard = Guard(cfg.q_limit)
    bar = tqdm(total=cfg.total_steps, initial=state.step, desc=algo.name, unit="step", disable=not progress,
               dynamic_ncols=True, mininterval=2.0)
    metrics: dict[str, Tensor] = {}
    segment_start = run_start = time.perf_counter()
    first_step = state.step
    while state.step < cfg.total_steps:
        metrics = algo.update(sample())
        state.step += 1
        guard.observe(state.step, metrics)
        done = state.step == cfg.total_steps
        if state.step % cfg.log_interval == 0 or done:
            guard.check(algo.name)
            state.metrics = {k: float(v) for k, v in metrics.items()}
            bar.update(state.step - bar.n)
            if not progress:  # a plain line for log files (a job's log shows where a long run is)
                rate = (state.step - first_step) / max(time.perf_counter() - run_start, 1e-9)
                print(f"{algo.name}: step {state.step}/{cfg.total_steps}, {rate:.1f} steps/s, about "
                      f"{(cfg.total_steps - state.step) / max(rate, 1e-9):.0f} s left", flush=True)
            if logger is not None:
                logger.log(state.metrics, step=state.step)
        if state.step % cfg.eval_interval == 0 or done:
            guard.check(algo.name)
            with torch.random.fork_rng(devices=cuda_devices()):  # validation must not touch training's RNG
                outcome = validate()
            val = record_validation(state, state.step, outcome, logger)
            bar.set_postfix(val=f"{val:.1f}")
        if state.step % cfg.checkpoint_interval == 0 or done:
            guard.check(algo.name)  # never checkpoint diverged weights
            state.metrics = {k: float(v) for k, v in metrics.items()}
            now = time.perf_counter()
            state.train_seconds += now - segment_start
            segment_start = now
            _save_last(last, algo, state, generator, fingerprint)
    bar.close()
    return state


def _save_last(path: Path, algo: OfflineAlgo, state: OfflineState, generator: torch.Generator,
               fingerprint: str) -> None:
    save_resume(path, {
        "algo": algo.state_dict(), "step": torch.tensor(state.step),
        "curve": curve_tensor(state.curve),
        "metrics": {k: torch.tensor(v, dtype=torch.float64) for k, v in state.metrics.items()},
        "diagnostics": state.diagnostics,
    }, fingerprint, generator)


def _load_last(path: Path, algo: OfflineAlgo, state: OfflineState, generator: torch.Generator,
               fingerprint: str) -> str | None:
    """Resume from ``path``; the reason why not, or None when resumed."""

    def restore(payload: dict[str, Any]) -> None:
        algo.load_state_dict(payload["algo"])
        state.step = int(payload["step"])
        state.curve = curve_from_tensor(payload["curve"])
        state.metrics = {k: float(v) for k, v in payload.get("metrics", {}).items()}
        state.diagnostics = [[int(step), dict(d)] for step, d in payload.get("diagnostics", [])]

    return load_resume(path, fingerprint, restore, generator)
