"""Lightning plumbing shared by the supervised stages (MF, GeMS): one trainer recipe.

``fit`` trains with early stopping or a fixed number of epochs, keeps the best-validation
checkpoint, writes ``last.ckpt`` every epoch into a work directory, and resumes from it when
a killed run is started again.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar

from slate_rl.core.logger import lightning_logger


def accelerator_for(device: torch.device) -> tuple[str, Any]:
    if device.type == "cuda":
        return "gpu", [device.index or 0]
    return "cpu", 1


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
) -> dict[str, float]:
    """Train ``system``; load the best-validation weights into it; return the best metrics.

    ``work_dir`` holds Lightning's ``last.ckpt`` (resume) and ``best.ckpt``; callers delete it
    once they have written their own artifact.
    """
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    L.seed_everything(seed, workers=True, verbose=False)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    best = ModelCheckpoint(dirpath=work, filename="best", monitor=monitor, mode="min", save_top_k=1, save_last=True,
                           enable_version_counter=False)
    callbacks: list[Any] = [best]
    if patience is not None:
        callbacks.append(EarlyStopping(monitor=monitor, mode="min", patience=patience))
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
        log_every_n_steps=50, plugins=plugins,
    )
    last = work / "last.ckpt"
    trainer.fit(system, train_dataloaders=train, val_dataloaders=val,
                ckpt_path=str(last) if last.is_file() else None)
    if best.best_model_path:
        # Our own work file (not user-supplied): Lightning checkpoints need full unpickling.
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=False)["state_dict"]
        system.load_state_dict(state)
    if trainer.logger:
        trainer.logger.finalize("success")
    return {
        "best_" + monitor: float(best.best_model_score) if best.best_model_score is not None else float("nan"),
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
