"""GeMS: the slate VAE of Deffayet et al. (WSDM 2023) that gives SAC a continuous action space.

Encoder q(z | slate, clicks): concat over the k slots of [item embedding, click] (k * 21 = 210)
-> 512 -> 256 -> 2d (mean, log-variance). Decoder: z -> 256 -> 512 (ReLU after each), then a
slate head 512 -> k * 20 whose slot vectors are scored against the item table transposed
(k x num_items logits; the table gets no gradient through this head) and a click head
512 -> k logits.

Loss (the normalisation that gives the paper's beta its meaning)::

    L = CE + lambda_click * BCE + beta * KL
    CE  = cross-entropy averaged over batch and slots
    BCE = click binary cross-entropy averaged over batch and slots
    KL  = KL(q(z|s,c) || N(0, I)) averaged over batch AND latent dimensions

Sampling during training: the published code draws z = mu + eps * exp(logvar), the *variance*
as the scale, and the paper's beta was tuned with it, so that is the default
(``sample_scale: variance``); ``sample_scale: std`` is the standard z = mu + eps * exp(logvar / 2)
(its artifacts carry the tag suffix ``_std``). Validation and the action bounds use mu and the
standard deviation, as published.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slate_rl.models.config import SampleScale
from slate_rl.models.nets import mlp


class GeMS(nn.Module):
    """The slate VAE (plain ``nn.Module``; training lives in :class:`slate_rl.models.gems_system.GeMSSystem`)."""

    def __init__(
        self,
        num_items: int = 1000,
        item_dim: int = 20,
        slate_size: int = 10,
        latent_dim: int = 32,
        encoder_hidden: tuple[int, ...] = (512, 256),
        decoder_hidden: tuple[int, ...] = (256, 512),
        item_table: Tensor | None = None,
        train_item_table: bool = True,
    ) -> None:
        super().__init__()
        self.num_items, self.item_dim, self.slate_size, self.latent_dim = num_items, item_dim, slate_size, latent_dim
        self.items = nn.Embedding(num_items, item_dim)
        if item_table is not None:
            if tuple(item_table.shape) != (num_items, item_dim):
                raise ValueError(f"item table has shape {tuple(item_table.shape)}, expected ({num_items}, {item_dim})")
            self.items.weight.data.copy_(item_table)
        self.items.weight.requires_grad_(train_item_table)
        self.encoder = mlp([slate_size * (item_dim + 1), *encoder_hidden, 2 * latent_dim])
        self.decoder = nn.Sequential(mlp([latent_dim, *decoder_hidden]), nn.ReLU())
        self.slate_head = nn.Linear(decoder_hidden[-1], slate_size * item_dim)
        self.click_head = nn.Linear(decoder_hidden[-1], slate_size)

    def encode(self, slates: Tensor, clicks: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z | slate, clicks) for (B, k) slates and clicks."""
        emb = self.items(slates.long())
        x = torch.cat([emb, clicks.to(emb.dtype).unsqueeze(-1)], dim=-1).flatten(1)
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Slate logits (B, k, num_items) and click logits (B, k)."""
        h = self.decoder(z)
        slot_vectors = self.slate_head(h).view(-1, self.slate_size, self.item_dim)
        slate_logits = slot_vectors @ self.items.weight.detach().T
        return slate_logits, self.click_head(h)

    @torch.no_grad()
    def rank(self, z: Tensor) -> Tensor:
        """Argmax decoding per slot (duplicates allowed): (B, d) -> (B, k) item ids."""
        h = self.decoder(z)
        slot_vectors = self.slate_head(h).view(-1, self.slate_size, self.item_dim)
        return (slot_vectors @ self.items.weight.T).argmax(dim=-1)


def gems_loss(
    model: GeMS, slates: Tensor, clicks: Tensor, beta: float, lambda_click: float, sample: bool = True,
    sample_scale: SampleScale = "variance",
) -> tuple[Tensor, dict[str, Tensor]]:
    """The GeMS objective on a batch; returns (loss, metrics). ``sample``: z = mu + eps * scale with the
    variance (published) or the standard deviation as the scale; otherwise z = mu."""
    mu, logvar = model.encode(slates, clicks)
    if sample:
        scale = torch.exp(logvar) if sample_scale == "variance" else torch.exp(0.5 * logvar)
        z = mu + torch.randn_like(mu) * scale
    else:
        z = mu
    slate_logits, click_logits = model.decode(z)
    target = slates.long()
    ce = F.cross_entropy(slate_logits.flatten(0, 1), target.flatten())
    clicks_f = clicks.to(click_logits.dtype)
    bce = F.binary_cross_entropy_with_logits(click_logits, clicks_f)
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp())).mean()
    loss = ce + lambda_click * bce + beta * kl
    with torch.no_grad():
        slot_acc = (slate_logits.argmax(-1) == target).float().mean()
        click_acc = ((click_logits > 0) == clicks.bool()).float().mean()
    return loss, {"loss": loss.detach(), "ce": ce.detach(), "bce": bce.detach(), "kl": kl.detach(),
                  "slot_accuracy": slot_acc, "click_accuracy": click_acc}


@torch.no_grad()
def action_bounds(model: GeMS, slates: Tensor, clicks: Tensor, chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """Per-dimension centre and scale (half range) of [min(mu - sigma), max(mu + sigma)]."""
    lo = torch.full((model.latent_dim,), float("inf"), device=model.items.weight.device)
    hi = -lo
    for i in range(0, slates.shape[0], chunk):
        s = slates[i : i + chunk].to(lo.device)
        c = clicks[i : i + chunk].to(lo.device)
        mu, logvar = model.encode(s, c)
        sigma = torch.exp(0.5 * logvar)
        lo = torch.minimum(lo, (mu - sigma).min(dim=0).values)
        hi = torch.maximum(hi, (mu + sigma).max(dim=0).values)
    return (hi + lo) / 2, (hi - lo) / 2
