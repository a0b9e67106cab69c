"""GeMS training throughput: examples per second and the projected time of one paper epoch.

Two pipelines on the same synthetic (slate, clicks) data, model and device, measured in one run:

* ``slate_rl``: what ``pretrain-gems`` runs, Lightning over :class:`TensorBatches` (index
  slices of int16/bool tensors, resident on the GPU when there is one) with fused Adam;
* ``baseline``: the usual recipe of the published code, a ``torch.utils.data.DataLoader``
  over a ``TensorDataset`` of int64/float tensors (per-example indexing and collation) and
  a plain Adam loop.

The paper trains on 10M examples per epoch (100k sessions x 100 steps).
"""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as L
import torch
from lightning.fabric.plugins.environments import LightningEnvironment
from torch.utils.data import DataLoader, TensorDataset

from slate_rl.data.batches import TensorBatches
from slate_rl.models.gems import GeMS, gems_loss
from slate_rl.models.gems_system import GeMSSystem
from slate_rl.models.training import accelerator_for

PAPER_EXAMPLES_PER_EPOCH = 10_000_000
WARMUP_STEPS = 10


class _StepTimer(L.Callback):
    def __init__(self) -> None:
        self.start = 0.0
        self.steps = 0

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, idx: int) -> None:
        if idx == WARMUP_STEPS:
            if module.device.type == "cuda":
                torch.cuda.synchronize(module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, out: Any, batch: Any, idx: int):
        if idx >= WARMUP_STEPS:
            self.steps += 1


def _data(n: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "slates": torch.randint(0, 1000, (n, 10), generator=g, dtype=torch.int16).to(device),
        "clicks": (torch.rand(n, 10, generator=g) < 0.1).to(device),
    }


def slate_rl_examples_per_second(device: torch.device, steps: int, batch_size: int = 256) -> float:
    data = _data((steps + WARMUP_STEPS) * batch_size, device)
    system = GeMSSystem(latent_dim=32)
    timer = _StepTimer()
    accelerator, devices = accelerator_for(device)
    trainer = L.Trainer(
        max_epochs=1, accelerator=accelerator, devices=devices, callbacks=[timer], logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        plugins=[LightningEnvironment()], num_sanity_val_steps=0,
    )
    trainer.fit(system, train_dataloaders=TensorBatches(data, batch_size, seed=0))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return timer.steps * batch_size / (time.perf_counter() - timer.start)


def baseline_examples_per_second(device: torch.device, steps: int, batch_size: int = 256) -> float:
    data = _data((steps + WARMUP_STEPS) * batch_size, torch.device("cpu"))
    dataset = TensorDataset(data["slates"].long(), data["clicks"].float())
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True)
    model = GeMS(latent_dim=32).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    start, done = 0.0, 0
    for i, (slates, clicks) in enumerate(loader):
        if i == WARMUP_STEPS:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        slates, clicks = slates.to(device), clicks.to(device)
        loss, metrics = gems_loss(model, slates, clicks, 1.0, 0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        float(metrics["loss"])  # the per-step .item() logging of eager loops
        if i >= WARMUP_STEPS:
            done += 1
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return done * batch_size / (time.perf_counter() - start)


def run_benchmark(device: torch.device, steps: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, fn in (("baseline", baseline_examples_per_second), ("slate_rl", slate_rl_examples_per_second)):
        eps = fn(device, steps)
        rows.append({"pipeline": name, "examples_per_second": eps,
                     "paper_epoch_minutes": PAPER_EXAMPLES_PER_EPOCH / eps / 60})
    for r in rows:
        r["speedup_vs_baseline"] = r["examples_per_second"] / rows[0]["examples_per_second"]
    return rows
