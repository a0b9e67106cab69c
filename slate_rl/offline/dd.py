"""Decision Diffuser (Ajay et al. 2023, "Is Conditional Generative Modeling all you need for
Decision-Making?"), with the locomotion settings of anuragajay/decision-diffuser as the reference
(``config/locomotion_config.py``, ``diffuser/models/{temporal,diffusion,helpers}.py``).

A diffusion model over **state sequences** ``x = (s_t, ..., s_{t+H-1})`` (states scaled per
dimension into [-1, 1] with the dataset's limits), conditioned on the first state (clamped to the
observed one at every denoising step) and, by classifier-free guidance, on a normalised return
``c``; actions come from an inverse dynamics MLP ``a_t = f(s_t, s_{t+1})``::

    loss = 1/2 (L_diffusion + L_inverse)
    L_diffusion = E_{k, eps} mean_{b, h > 0, d} |eps_theta(x_k, k, m c) - eps|^2,
                  x_k = sqrt(abar_k) x_0 + sqrt(1 - abar_k) eps, x_k[:, 0] = x_0[:, 0], m ~ Bernoulli(1 - p)
    L_inverse   = mean |f(s_t, s_{t+1}) - a~_t|^2,   a~ = (a - center) / scale

with a cosine noise schedule of ``diffusion_steps`` steps, epsilon prediction and the condition
dropped (``m = 0``) with probability ``condition_dropout``. Sampling runs the reverse chain with
``eps = eps(.., 0) + w (eps(.., c) - eps(.., 0))`` (``w = guidance_weight``), their ancestral
steps with noise temperature 0.5 and the predicted ``x_0`` clipped to [-1, 1]; ``sampling_steps``
below ``diffusion_steps`` runs a strided deterministic DDIM chain instead (Song et al. 2021)
over evenly spaced steps (an evaluation shortcut; its effect is measured by
``slate-rl bench sequence``). The policy acts ``center + scale * clip(f(s_t, s^_{t+1}), -1, 1)``
with the plan's ``s^_{t+1}``, from the EMA copy of the networks (decay 0.995, updated every 10
steps, a plain copy before step 2000: their trainer's schedule).

Adaptations to 100-step sessions:

* **Return condition.** Theirs is the discounted (0.99) return-to-go from the window's start over
  a fixed scale (400 for hopper) and the test condition 0.9. A session's achievable return-to-go
  shrinks towards its end, so a single scale would ask late steps for the impossible: ``c`` is
  the discounted return-to-go over its per-timestep dataset maximum, ``c = G_t / max_e G_{e,t}``,
  and the test condition ``test_return`` (0.9) means "90% of the best return-to-go the data shows
  from this step".
* **Horizon.** Default 20 (theirs: 100 on 1000-step episodes). With 100-step sessions a 100-step
  window runs past the session end from every start but the first, so most of the model would
  learn padding; 20 steps match the Decision Transformer's context (a like-for-like comparison),
  cost a fifth of the denoising work per decision and keep the three resolutions of the U-Net
  (the horizon must be a multiple of 4 with multipliers (1, 4, 8)). Windows start anywhere in the
  session (theirs: not in the last ``H`` steps of a 1000-step episode); steps past the end repeat
  the last state and carry no loss.
* **State scaling.** Per-dimension min/max into [-1, 1] (their ``LimitsNormalizer``) of the
  normalised beliefs, instead of the empirical-CDF normaliser of their locomotion runs.
* **Loss.** Their total loss averages both terms; padded steps are masked.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.models.nets import mlp, soft_update
from slate_rl.offline.config import DDConfig, check_target
from slate_rl.offline.sequence import Context, SequenceAlgo, SessionSpec


# ---------------------------------------------------------------------------------- the temporal U-Net
def sinusoidal_embedding(k: Tensor, dim: int) -> Tensor:
    """Transformer sinusoidal embedding of diffusion steps ``k`` (B,) -> (B, dim)."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, device=k.device) * (-math.log(10000.0) / (half - 1)))
    arg = k.float()[:, None] * freq[None]
    return torch.cat([arg.sin(), arg.cos()], dim=-1)


class ConvBlock(nn.Sequential):
    """Conv1d (same padding) -> GroupNorm(8) -> Mish."""

    def __init__(self, c_in: int, c_out: int, kernel: int) -> None:
        super().__init__(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(8, c_out), nn.Mish())


class ResidualTemporalBlock(nn.Module):
    """Two conv blocks, the step/return embedding added after the first, a 1x1 residual projection."""

    def __init__(self, c_in: int, c_out: int, embed_dim: int, kernel: int) -> None:
        super().__init__()
        self.block1, self.block2 = ConvBlock(c_in, c_out, kernel), ConvBlock(c_out, c_out, kernel)
        self.embed = nn.Sequential(nn.Mish(), nn.Linear(embed_dim, c_out))
        self.residual = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.block2(self.block1(x) + self.embed(emb).unsqueeze(-1)) + self.residual(x)


class Level(nn.Module):
    """One resolution of the U-Net: two residual blocks and the resampling after them."""

    def __init__(self, block1: ResidualTemporalBlock, block2: ResidualTemporalBlock, resample: nn.Module) -> None:
        super().__init__()
        self.block1, self.block2, self.resample = block1, block2, resample

    def forward(self, x: Tensor, emb: Tensor) -> tuple[Tensor, Tensor]:
        """The blocks' output, before and after resampling."""
        h = self.block2(self.block1(x, emb), emb)
        return h, self.resample(h)


class TemporalUnet(nn.Module):
    """Their ``TemporalUnet`` with return conditioning: (B, H, S) noisy states -> (B, H, S) noise."""

    def __init__(self, state_dim: int, cfg: DDConfig) -> None:
        super().__init__()
        dim, k = cfg.dim, cfg.kernel_size
        dims = [state_dim, *[dim * m for m in cfg.dim_mults]]
        pairs = list(zip(dims[:-1], dims[1:], strict=True))
        self.dim = dim
        self.time_mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.Mish(), nn.Linear(4 * dim, dim))
        self.returns_mlp = nn.Sequential(nn.Linear(1, dim), nn.Mish(), nn.Linear(dim, 4 * dim), nn.Mish(),
                                         nn.Linear(4 * dim, dim))
        emb = 2 * dim
        self.downs = nn.ModuleList([
            Level(ResidualTemporalBlock(a, b, emb, k), ResidualTemporalBlock(b, b, emb, k),
                  nn.Identity() if i == len(pairs) - 1 else nn.Conv1d(b, b, 3, 2, 1))
            for i, (a, b) in enumerate(pairs)])
        self.mid1 = ResidualTemporalBlock(dims[-1], dims[-1], emb, k)
        self.mid2 = ResidualTemporalBlock(dims[-1], dims[-1], emb, k)
        self.ups = nn.ModuleList([
            Level(ResidualTemporalBlock(2 * b, a, emb, k), ResidualTemporalBlock(a, a, emb, k),
                  nn.ConvTranspose1d(a, a, 4, 2, 1))
            for a, b in reversed(pairs[1:])])
        self.final = nn.Sequential(ConvBlock(dim, dim, k), nn.Conv1d(dim, state_dim, 1))

    def forward(self, x: Tensor, k: Tensor, returns: Tensor, keep: Tensor) -> Tensor:
        """``keep`` (B,) 1 to condition on ``returns`` (B,), 0 to drop the condition."""
        emb = torch.cat([self.time_mlp(sinusoidal_embedding(k, self.dim)),
                         self.returns_mlp(returns.unsqueeze(-1)) * keep.unsqueeze(-1)], dim=-1)
        h = x.transpose(1, 2)
        skips = []
        for down in self.downs:
            skip, h = down(h, emb)
            skips.append(skip)
        h = self.mid2(self.mid1(h, emb), emb)
        for up in self.ups:
            _, h = up(torch.cat([h, skips.pop()], dim=1), emb)
        return self.final(h).transpose(1, 2)


def cosine_betas(steps: int, s: float = 0.008) -> Tensor:
    """The cosine schedule (Nichol & Dhariwal 2021), betas clipped to 0.999."""
    x = np.linspace(0, steps + 1, steps + 1)
    abar = np.cos(((x / (steps + 1)) + s) / (1 + s) * np.pi * 0.5) ** 2
    abar = abar / abar[0]
    return torch.tensor(np.clip(1 - abar[1:] / abar[:-1], 0, 0.999), dtype=torch.float32)


# ---------------------------------------------------------------------------------- the method
class DecisionDiffuser(SequenceAlgo):
    """Return-conditioned diffusion over state plans, actions by inverse dynamics."""

    name = "dd"
    betas: Tensor
    abar: Tensor
    sqrt_abar: Tensor
    sqrt_1m_abar: Tensor
    post_var: Tensor
    post_c1: Tensor
    post_c2: Tensor

    def __init__(self, obs_dim: int, action_center: Tensor, action_scale: Tensor, gamma: float,
                 total_steps: int = 1, config: DDConfig | None = None, session: SessionSpec | None = None) -> None:
        super().__init__(obs_dim, action_center, action_scale, gamma, session)
        cfg = self.cfg = config or DDConfig()
        self.return_discount = cfg.discount
        self.unet = TemporalUnet(obs_dim, cfg)
        self.inverse = mlp([2 * obs_dim, cfg.hidden, cfg.hidden, self.action_dim])
        self.unet_ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.inverse_ema = copy.deepcopy(self.inverse).requires_grad_(False)
        self.opt = torch.optim.Adam([*self.unet.parameters(), *self.inverse.parameters()], lr=cfg.lr, fused=True)
        betas = cosine_betas(cfg.diffusion_steps)
        abar = torch.cumprod(1 - betas, 0)
        abar_prev = torch.cat([torch.ones(1), abar[:-1]])
        for name, value in {
            "betas": betas, "abar": abar, "sqrt_abar": abar.sqrt(), "sqrt_1m_abar": (1 - abar).sqrt(),
            "post_var": betas * (1 - abar_prev) / (1 - abar),
            "post_c1": betas * abar_prev.sqrt() / (1 - abar),
            "post_c2": (1 - abar_prev) * (1 - betas).sqrt() / (1 - abar),
        }.items():
            self.register_buffer(name, value, persistent=False)
        self.state_low: Tensor
        self.state_high: Tensor
        self.register_buffer("state_low", -torch.ones(obs_dim))
        self.register_buffer("state_high", torch.ones(obs_dim))

    @property
    def window(self) -> int:
        return self.cfg.horizon

    @property
    def batch_windows(self) -> int:
        return self.cfg.batch_size * self.cfg.grad_accumulation

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"dd": self.opt}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "return_normalisation": f"discounted ({self.cfg.discount}) return-to-go / its "
                "per-timestep maximum in the dataset", "test_return": self.cfg.test_return,
                "sampling": "ancestral" if self.cfg.sampling_steps == self.cfg.diffusion_steps
                else f"strided DDIM, {self.cfg.sampling_steps} of {self.cfg.diffusion_steps} steps"}

    @torch.no_grad()
    def fit_states(self, buffer: EpisodeBuffer) -> None:
        states = torch.cat([buffer.data["observations"][: buffer.size].flatten(0, 1),
                            buffer.data["next_observations"][: buffer.size, -1]])
        self.state_low.copy_(states.min(0).values)
        self.state_high.copy_(torch.maximum(states.max(0).values, self.state_low + 1e-6))

    def scale(self, states: Tensor) -> Tensor:
        """Normalised beliefs -> [-1, 1] per dimension (the dataset's limits)."""
        return 2 * (states - self.state_low) / (self.state_high - self.state_low) - 1

    def condition(self, returns: Tensor, timesteps: Tensor) -> Tensor:
        """Discounted return-to-go over its per-timestep maximum in the data."""
        return returns / self.rtg_max[timesteps]

    def losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        x0 = self.scale(batch["states"])
        b = x0.shape[0]
        k = torch.randint(0, self.cfg.diffusion_steps, (b,), device=x0.device)
        noise = torch.randn_like(x0)
        xk = self.sqrt_abar[k].view(b, 1, 1) * x0 + self.sqrt_1m_abar[k].view(b, 1, 1) * noise
        xk = torch.cat([x0[:, :1], xk[:, 1:]], dim=1)  # the first state is the observed one
        keep = torch.bernoulli(torch.full((b,), 1.0 - self.cfg.condition_dropout, device=x0.device))
        cond = self.condition(batch["returns"][:, 0], batch["timesteps"][:, 0])
        weight = batch["state_mask"].clone()
        weight[:, 0] = 0.0
        diffusion = (((self.unet(xk, k, cond, keep) - noise) ** 2) * weight.unsqueeze(-1)).mean()
        pairs = torch.cat([x0[:, :-1], x0[:, 1:]], dim=-1)
        mask = batch["mask"][:, :-1].unsqueeze(-1)
        err = (self.inverse(pairs) - self.normalise(batch["actions"][:, :-1])) ** 2 * mask
        inverse = err.sum() / (mask.sum() * self.action_dim).clamp(min=1.0)
        loss = 0.5 * (diffusion + inverse)
        return {"dd": loss}, {"loss": loss.detach(), "diffusion_loss": diffusion.detach(),
                              "inverse_loss": inverse.detach()}

    def update(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """One Adam step on ``grad_accumulation`` micro-batches of ``batch_size`` windows, then the EMA."""
        self.opt.zero_grad(set_to_none=True)
        parts = [{key: v.chunk(self.cfg.grad_accumulation)[i] for key, v in batch.items()}
                 for i in range(self.cfg.grad_accumulation)]
        totals: dict[str, Tensor] = {}
        for part in parts:
            losses, metrics = self.losses(part)
            (losses["dd"] / len(parts)).backward()
            for key, v in metrics.items():
                totals[key] = totals.get(key, 0.0) + v / len(parts)
        self.opt.step()
        n = self.tick()
        if n % self.cfg.ema_every == 0:
            tau = 1.0 if n < self.cfg.ema_start else 1.0 - self.cfg.ema_decay
            soft_update(self.unet_ema, self.unet, tau)
            soft_update(self.inverse_ema, self.inverse, tau)
        return totals

    # ------------------------------------------------------------------ sampling and acting
    def _eps(self, x: Tensor, k: int, cond: Tensor) -> Tensor:
        """Guided noise prediction: one U-Net call on the conditional and unconditional halves."""
        b = x.shape[0]
        steps = torch.full((2 * b,), k, device=x.device, dtype=torch.long)
        keep = torch.cat([torch.ones(b, device=x.device), torch.zeros(b, device=x.device)])
        eps_c, eps_u = self.unet_ema(torch.cat([x, x]), steps, torch.cat([cond, cond]), keep).chunk(2)
        return eps_u + self.cfg.guidance_weight * (eps_c - eps_u)

    def schedule(self) -> list[int]:
        """The diffusion steps the sampler visits, last to first."""
        n, s = self.cfg.diffusion_steps, self.cfg.sampling_steps
        return [int(v) for v in np.unique(np.linspace(0, n - 1, s).round().astype(int))[::-1]]

    @torch.no_grad()
    def plan(self, first: Tensor, cond: Tensor) -> Tensor:
        """Sample state plans (B, H, S) in [-1, 1] units starting at ``first`` (scaled)."""
        b, dev = first.shape[0], first.device
        x = self.cfg.noise_scale * torch.randn(b, self.cfg.horizon, first.shape[-1], device=dev)
        steps = self.schedule()
        ancestral = len(steps) == self.cfg.diffusion_steps
        for i, k in enumerate(steps):
            x[:, 0] = first
            eps = self._eps(x, k, cond)
            x0 = ((x - self.sqrt_1m_abar[k] * eps) / self.sqrt_abar[k]).clamp(-1.0, 1.0)
            if ancestral:
                mean = self.post_c1[k] * x0 + self.post_c2[k] * x
                std = self.post_var[k].clamp(min=1e-20).sqrt() if k > 0 else torch.zeros((), device=dev)
                x = mean + std * self.cfg.noise_scale * torch.randn_like(x)
            else:
                prev = steps[i + 1] if i + 1 < len(steps) else -1
                abar_prev = self.abar[prev] if prev >= 0 else torch.ones((), device=dev)
                eps = (x - self.sqrt_abar[k] * x0) / self.sqrt_1m_abar[k]
                x = abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps
        x[:, 0] = first
        return x

    def begin(self, batch: int, target: float | None = None) -> Context:
        target = check_target(self.cfg.test_return if target is None else target, "target return")
        return {"t": 0, "target": target}

    @torch.no_grad()
    def step(self, context: Context, states: Tensor, slates: Tensor, clicks: Tensor, rewards: Tensor
             ) -> tuple[Tensor, Context]:
        first = self.scale(states)
        cond = torch.full((states.shape[0],), float(context["target"]), device=states.device)
        x = self.plan(first, cond)
        u = self.inverse_ema(torch.cat([x[:, 0], x[:, 1]], dim=-1)).clamp(-1.0, 1.0)
        context["t"] += 1
        return self.action_center + self.action_scale * u, context
