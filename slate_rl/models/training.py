"""Lightning plumbing shared by the supervised stages (MF, GeMS): one trainer recipe.

``fit`` trains with early stopping or a fixed number of epochs, keeps the best-validation
weights, writes ``last.ckpt`` every epoch into a work directory, and resumes from it when a
killed run is started again.

The work directory is the stage's own, but a file in it is still read with
``weights_only=True`` and nothing read from it is trusted: the best weights are a plain state
dict at a fixed name (``best.pt``), never a path stored in a checkpoint. ``last.ckpt`` carries
the run's fingerprint (its inputs and settings: a rerun with others starts over instead of
failing on mismatched shapes), the shuffle epoch and torch's RNG, so that a resumed run ends
with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.callbacks import Callback, EarlyStopping, TQDMProgressBar

from slate_rl.core.errors import ArtifactError
from slate_rl.core.io import atomic_path, load_checkpoint, read_resume_checkpoint, save_torch
from slate_rl.core.logger import lightning_logger
from slate_rl.core.rng import set_torch_rng_state, torch_rng_state

BEST_FORMAT = "slate_rl.best_weights"
BEST_VERSION = 1


def accelerator_for(device: torch.device) -> tuple[str, Any]:
    if device.type == "cuda":
        return "gpu", [device.index or 0]
    return "cpu", 1


def seed_all(value: int) -> None:
    """Seed every generator a supervised run uses (call it before building the system too:
    its initial weights are drawn when it is built)."""
    L.seed_everything(value, workers=True, verbose=False)


class WorkState(Callback):
    """Keeps the best-validation weights (``best.pt``) and writes the resume state (``last.ckpt``).

    Its own part of ``last.ckpt``: best score and epoch, the run's fingerprint, the shuffle
    epoch of the training batches and torch's RNG state.
    """

    def __init__(self, work: Path, monitor: str, batches: Any, fingerprint: str) -> None:
        self.work, self.monitor, self.batches, self.fingerprint = work, monitor, batches, fingerprint
        self.best = math.inf
        self.best_epoch = -1

    @property
    def best_path(self) -> Path:
        return self.work / "best.pt"

    @property
    def last_path(self) -> Path:
        return self.work / "last.ckpt"

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        score = trainer.callback_metrics.get(self.monitor)
        if score is not None and float(score) < self.best:
            self.best, self.best_epoch = float(score), trainer.current_epoch
            weights = {k: v.detach().cpu() for k, v in pl_module.state_dict().items()}
            save_torch(self.best_path, {"format": BEST_FORMAT, "version": BEST_VERSION, "state_dict": weights})
        with atomic_path(self.last_path) as tmp:  # a full disk: one error naming the file
            trainer.save_checkpoint(tmp)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "fingerprint": self.fingerprint,
                "shuffle_epoch": int(getattr(self.batches, "epoch", 0)), **torch_rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_epoch = float(state_dict["best"]), int(state_dict["best_epoch"])
        if hasattr(self.batches, "epoch"):  # the next epoch's shuffle order, not epoch 0's again
            self.batches.epoch = int(state_dict["shuffle_epoch"])
        set_torch_rng_state(state_dict)


def _resume_path(work: Path, fingerprint: str) -> Path | None:
    """``work/last.ckpt`` if it belongs to this run; otherwise clear the work directory."""
    last = work / "last.ckpt"
    if not last.is_file():
        return None
    try:
        payload = read_resume_checkpoint(last)
        states = [s for s in (payload.get("callbacks") or {}).values() if isinstance(s, dict) and "fingerprint" in s]
        reason = None if states and states[0]["fingerprint"] == fingerprint else \
            "written by a run with other inputs or settings"
    except ArtifactError as exc:
        reason = str(exc)
    if reason is None:
        return last
    print(f"{last}: {reason}; starting over")
    shutil.rmtree(work)
    work.mkdir(parents=True)
    return None


def fit(
    system: L.LightningModule,
    train: Any,
    val: Any,
    work_dir: str | os.PathLike[str],
    device: torch.device,
    max_epochs: int,
    monitor: str = "val_loss",
    patience: int | None = None,
    run_name: str = "run",
    run_config: dict[str, Any] | None = None,
    logger_mode: str | None = None,
    progress: bool = True,
    seed: int = 0,
    fingerprint: str = "",
) -> dict[str, float]:
    """Train ``system``; load the best-validation weights into it; return the best metrics.

    ``work_dir`` holds ``last.ckpt`` (resume) and ``best.pt``; callers delete it once they have
    written their own artifact. ``fingerprint`` names the run's inputs and settings: a
    ``last.ckpt`` written under another one is discarded and training starts over.
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    seed_all(seed)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    state = WorkState(work, monitor, train, fingerprint)
    callbacks: list[Any] = []
    if patience is not None:
        callbacks.append(EarlyStopping(monitor=monitor, mode="min", patience=patience))
    callbacks.append(state)  # after early stopping: last.ckpt holds its updated counters
    if progress:
        callbacks.append(TQDMProgressBar(refresh_rate=50))
    accelerator, devices = accelerator_for(device)
    # One process, one device: never let Lightning reconfigure itself from SLURM variables
    # when the rule runs inside a SLURM job.
    plugins: list[Any] = [LightningEnvironment()]
    trainer = L.Trainer(
        max_epochs=max_epochs, accelerator=accelerator, devices=devices, callbacks=callbacks,
        logger=lightning_logger(run_name, run_config, logger_mode), enable_progress_bar=progress,
        enable_model_summary=False, num_sanity_val_steps=0, deterministic=False, default_root_dir=str(work),
        log_every_n_steps=50, plugins=plugins, enable_checkpointing=False,
    )
    last = _resume_path(work, fingerprint)
    trainer.fit(system, train_dataloaders=train, val_dataloaders=val, ckpt_path=str(last) if last else None,
                weights_only=True)
    if state.best_path.is_file():
        best = load_checkpoint(state.best_path, BEST_FORMAT, BEST_VERSION, "best-validation weights")
        system.load_state_dict(best["state_dict"])
    if trainer.logger:
        trainer.logger.finalize("success")
    return {
        "best_" + monitor: state.best if math.isfinite(state.best) else float("nan"),
        "epochs": float(trainer.current_epoch),
        "global_steps": float(trainer.global_step),
    }


@torch.no_grad()
def evaluate_batches(fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]], batches: Any,
                     device: torch.device) -> dict[str, float]:
    """Average of ``fn(batch)`` metrics over batches, weighted by batch size."""
    totals: dict[str, float] = {}
    count = 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        n = next(iter(batch.values())).shape[0]
        for k, v in fn(batch).items():
            totals[k] = totals.get(k, 0.0) + float(v) * n
        count += n
    return {k: v / max(count, 1) for k, v in totals.items()}


def remove_work_dir(work_dir: str | os.PathLike[str]) -> None:
    shutil.rmtree(work_dir, ignore_errors=True)
