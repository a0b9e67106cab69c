"""The Lightning system that pre-trains :class:`~slate_rl.models.gems.GeMS` on logged slates (``pretrain-gems``).

Apart from the model, so that the stages that only decode with a trained GeMS (train-agent, collect,
train-offline) start without importing Lightning.
"""

from __future__ import annotations

import lightning.pytorch as L
import torch
from torch import Tensor

from slate_rl.models.config import ItemTableMode, SampleScale
from slate_rl.models.gems import GeMS, gems_loss


class GeMSSystem(L.LightningModule):
    """Lightning system training :class:`GeMS` (thin: the loss is :func:`gems_loss`)."""

    def __init__(
        self,
        num_items: int = 1000,
        item_dim: int = 20,
        slate_size: int = 10,
        latent_dim: int = 32,
        beta: float = 1.0,
        lambda_click: float = 0.5,
        lr: float = 1e-3,
        item_table_mode: ItemTableMode = "scratch",
        item_table: Tensor | None = None,
        sample_scale: SampleScale = "variance",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["item_table"])
        if item_table_mode != "scratch" and item_table is None:
            raise ValueError(f"item_table_mode {item_table_mode!r} needs an item table")
        self.model = GeMS(
            num_items, item_dim, slate_size, latent_dim,
            item_table=item_table if item_table_mode != "scratch" else None,
            train_item_table=item_table_mode == "scratch",
        )
        self.beta, self.lambda_click, self.lr, self.sample_scale = beta, lambda_click, lr, sample_scale

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, metrics = gems_loss(self.model, batch["slates"], batch["clicks"], self.beta, self.lambda_click,
                                  sample_scale=self.sample_scale)
        self.log_dict({f"train_{k}": v for k, v in metrics.items()}, prog_bar=False, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        n = batch["slates"].shape[0]
        _, metrics = gems_loss(self.model, batch["slates"], batch["clicks"], self.beta, self.lambda_click, sample=False)
        self.log_dict({f"val_{k}": v for k, v in metrics.items()}, prog_bar=True, on_epoch=True, batch_size=n)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=self.lr, fused=True)
