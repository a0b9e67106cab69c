"""BPR matrix factorisation of the logged sessions: item embeddings for TopK(MF) and GeMS.

A "user" is one logged session; its positives are the items it clicked; every positive is
paired with one uniformly sampled negative item. Loss: -log sigmoid(u.e_pos - u.e_neg).

Validation (the spec holds out 10% of sessions; a held-out session's user vector must still
be fitted from something, so we split in time): in the first 10% of sessions, clicks at
steps < H/2 are training data and clicks at steps >= H/2 are validation positives, paired
with fixed (seeded) negatives. The validation AUC is the fraction of validation pairs whose
positive outscores the negative. This is the ``corrected`` variant (``mf.variant``).

The ``published`` variant (the default, naver/gems ``MFEmbeddings.train``): the first 10% of
sessions are held out, but both splits are renumbered from 0, so validation pairs (all clicks of
held-out session j, one uniform negative each) are scored with the user vector of *training*
session j: the validation reuses the training users. Training uses every click of the other
sessions.
"""

from __future__ import annotations

import lightning.pytorch as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slate_rl.core.config import Variant
from slate_rl.data.logs import LoggedSessions


class MatrixFactorization(nn.Module):
    """User (session) and item embeddings; score = dot product."""

    def __init__(self, num_users: int, num_items: int, dim: int = 20, init_std: float = 0.1) -> None:
        super().__init__()
        self.users = nn.Embedding(num_users, dim)
        self.items = nn.Embedding(num_items, dim)
        nn.init.normal_(self.users.weight, std=init_std)
        nn.init.normal_(self.items.weight, std=init_std)

    def score(self, users: Tensor, items: Tensor) -> Tensor:
        return (self.users(users) * self.items(items)).sum(-1)


def bpr_loss(model: MatrixFactorization, users: Tensor, pos: Tensor, neg: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    diff = model.score(users, pos) - model.score(users, neg)
    loss = -F.logsigmoid(diff).mean()
    return loss, {"loss": loss.detach(), "auc": (diff > 0).float().mean()}


def interactions(logs: LoggedSessions, val_fraction: float, seed: int, variant: Variant = "corrected"
                 ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(user, positive) training pairs and (user, positive, negative) validation triples (module doc)."""
    n, h, _ = logs.clicks.shape
    n_val = max(1, int(round(val_fraction * n))) if val_fraction > 0 else 0
    sess, step, rank = np.nonzero(logs.clicks)
    items = logs.slates[sess, step, rank].astype(np.int64)
    if variant == "published":
        n_val = max(1, int(n * val_fraction))
        is_val = sess < n_val
        users = np.where(is_val, sess, sess - n_val)  # both splits renumbered from 0
    else:
        is_val = (sess < n_val) & (step >= h // 2)
        users = sess
    train = {"users": torch.from_numpy(users[~is_val].astype(np.int64)), "pos": torch.from_numpy(items[~is_val])}
    rng = np.random.default_rng(seed)
    num_items = int(logs.metadata.get("env_config", {}).get("num_items", 1000))
    val = {
        "users": torch.from_numpy(users[is_val].astype(np.int64)),
        "pos": torch.from_numpy(items[is_val]),
        "neg": torch.from_numpy(rng.integers(0, num_items, size=int(is_val.sum()), dtype=np.int64)),
    }
    return train, val


class MFSystem(L.LightningModule):
    """Lightning system for BPR-MF; negatives of training pairs are drawn per batch."""

    def __init__(self, num_users: int, num_items: int = 1000, dim: int = 20, lr: float = 1e-4,
                 weight_decay: float = 0.0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = MatrixFactorization(num_users, num_items, dim)
        self.num_items, self.lr, self.weight_decay = num_items, lr, weight_decay

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        neg = torch.randint(0, self.num_items, batch["pos"].shape, device=batch["pos"].device)
        loss, metrics = bpr_loss(self.model, batch["users"], batch["pos"], neg)
        self.log("train_loss", metrics["loss"], on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        _, metrics = bpr_loss(self.model, batch["users"], batch["pos"], batch["neg"])
        n = batch["pos"].shape[0]
        self.log_dict({"val_loss": metrics["loss"], "val_auc": metrics["auc"]}, prog_bar=True, on_epoch=True,
                      batch_size=n)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay, fused=True)


