"""Decision Transformer (Chen et al. 2021, "Decision Transformer: Reinforcement Learning via Sequence
Modeling"), with the settings of CORL ``algorithms/offline/dt.py`` as the reference.

Tokens per step ``(R^_t, s_t, a_t)``, each a linear embedding plus a learned timestep embedding,
interleaved into a causal GPT (pre-norm blocks, LayerNorm and dropout on the embeddings, a final
LayerNorm); the action is read from the state token::

    loss = mean_{b, t} mask_{b,t} |tanh(f(R^_{<=t}, s_{<=t}, a_{<t}))_{b,t} - a~_{b,t}|^2,
    a~ = (a - center) / scale,   R^_t = R_t / R_max

with ``R_t`` the undiscounted return-to-go and ``R_max`` the dataset's best session return: in-data
returns-to-go lie in [0, 1] (CORL's reward scale 0.001 puts D4RL hopper's ~3.6k returns at ~3.6;
our sessions return tens to a few hundred clicks, so a fixed scale would suit one environment and
not the next). At test time the return-to-go starts at ``target_return * R_max`` and decreases by
each observed reward; the policy acts ``center + scale * tanh(.)``.

States: ``belief`` (the dataset's observations: the expert's GRU beliefs, normalised) or ``raw``
(the step's slate and clicks through the method's own item table, :class:`SlateClickEncoder`,
trained with the transformer; the history comes from the context, no recurrent encoder).

Attention is ``scaled_dot_product_attention`` with a causal mask: CORL's ``nn.MultiheadAttention``
also passes a key-padding mask, but padding only ever follows the real steps of a window, which a
causal mask already hides from them (padded positions have no loss).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slate_rl.core.errors import ConfigError
from slate_rl.offline.config import DTConfig, check_target
from slate_rl.offline.sequence import Context, SequenceAlgo, SessionSpec, SlateClickEncoder


class CausalBlock(nn.Module):
    """Pre-norm transformer block: x + drop(attn(ln1 x)), then x + mlp(ln2 x) (GELU, 4x width)."""

    def __init__(self, dim: int, heads: int, attention_dropout: float, residual_dropout: float) -> None:
        super().__init__()
        self.heads, self.attention_dropout = heads, attention_dropout
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(residual_dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim),
                                 nn.Dropout(residual_dropout))

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                             dropout_p=self.attention_dropout if self.training else 0.0)
        x = x + self.drop(self.out(att.transpose(1, 2).reshape(b, n, d)))
        return x + self.mlp(self.norm2(x))


class DecisionTransformerNet(nn.Module):
    """Embeddings, causal blocks and the tanh action head; outputs normalised actions (B, L, A)."""

    def __init__(self, state_dim: int, action_dim: int, max_timestep: int, cfg: DTConfig) -> None:
        super().__init__()
        d = cfg.embedding_dim
        self.timestep_emb = nn.Embedding(max_timestep, d)
        self.state_emb = nn.Linear(state_dim, d)
        self.action_emb = nn.Linear(action_dim, d)
        self.return_emb = nn.Linear(1, d)
        self.emb_norm, self.out_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.emb_drop = nn.Dropout(cfg.embedding_dropout)
        self.blocks = nn.ModuleList([CausalBlock(d, cfg.heads, cfg.attention_dropout, cfg.residual_dropout)
                                     for _ in range(cfg.layers)])
        self.head = nn.Linear(d, action_dim)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        """GPT-2 initialisation as in CORL: N(0, 0.02) weights, zero biases; the fused q/k/v projection
        keeps ``nn.MultiheadAttention``'s Xavier-uniform ``in_proj`` initialisation."""
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)
        if isinstance(module, CausalBlock):
            nn.init.xavier_uniform_(module.qkv.weight)

    def forward(self, states: Tensor, actions: Tensor, returns: Tensor, timesteps: Tensor) -> Tensor:
        b, n = states.shape[:2]
        time = self.timestep_emb(timesteps)
        tokens = torch.stack([self.return_emb(returns.unsqueeze(-1)) + time, self.state_emb(states) + time,
                              self.action_emb(actions) + time], dim=2).reshape(b, 3 * n, -1)
        x = self.emb_drop(self.emb_norm(tokens))
        for block in self.blocks:
            x = block(x)
        return torch.tanh(self.head(self.out_norm(x[:, 1::3])))


class DecisionTransformer(SequenceAlgo):
    """Return-conditioned behaviour cloning with a causal transformer over (return, state, action) tokens."""

    name = "dt"

    def __init__(self, obs_dim: int, action_center: Tensor, action_scale: Tensor, gamma: float,
                 total_steps: int = 1, config: DTConfig | None = None, session: SessionSpec | None = None) -> None:
        super().__init__(obs_dim, action_center, action_scale, gamma, session)
        cfg = self.cfg = config or DTConfig()
        h = self.session.episode_length
        if cfg.context > h:
            raise ConfigError(f"dt.context ({cfg.context}) is longer than a session ({h} steps); choose at most {h}")
        self.raw = SlateClickEncoder(self.session.num_items, self.session.slate_size, cfg.item_dim) \
            if cfg.states == "raw" else None
        state_dim = self.raw.out_dim if self.raw is not None else obs_dim
        self.net = DecisionTransformerNet(state_dim, self.action_dim, h + cfg.context, cfg)
        self.opt = torch.optim.AdamW(self.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     betas=(cfg.beta1, cfg.beta2), fused=True)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _Warmup(cfg.warmup_steps))

    @property
    def window(self) -> int:
        return self.cfg.context

    @property
    def batch_windows(self) -> int:
        return self.cfg.batch_size

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"dt": self.opt}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "return_normalisation": "return-to-go / the dataset's best session return",
                "best_session_return": float(self.rtg_max[0]),
                "target_return": self.cfg.target_return,
                "target_return_clicks": self.cfg.target_return * float(self.rtg_max[0])}

    def schedulers(self) -> dict[str, torch.optim.lr_scheduler.LRScheduler]:
        return {"dt": self.sched}

    def _states(self, states: Tensor, slates: Tensor, clicks: Tensor) -> Tensor:
        return self.raw(slates, clicks) if self.raw is not None else states

    def predict(self, batch: dict[str, Tensor]) -> Tensor:
        """Normalised actions predicted at every step of the windows."""
        states = self._states(batch["states"], batch["slates"], batch["clicks"])
        return self.net(states, self.normalise(batch["actions"]) * batch["mask"].unsqueeze(-1),
                        batch["returns"] / self.rtg_max[0], batch["timesteps"])

    def losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        mask = batch["mask"].unsqueeze(-1)
        err = (self.predict(batch) - self.normalise(batch["actions"])) ** 2
        loss = (err * mask).mean()
        return {"dt": loss}, {"actor_loss": loss.detach()}

    def update(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """One AdamW step on the masked action MSE, gradient norm clipped, then the warm-up schedule."""
        losses, metrics = self.losses(batch)
        self.opt.zero_grad(set_to_none=True)
        losses["dt"].backward()
        metrics["grad_norm"] = nn.utils.clip_grad_norm_(self.parameters(), self.cfg.clip_grad, foreach=True).detach()
        self.opt.step()
        self.sched.step()
        self.tick()
        return metrics

    # ------------------------------------------------------------------ acting
    def begin(self, batch: int, target: float | None = None) -> Context:
        target = check_target(self.cfg.target_return if target is None else target, "target return")
        h, dev = self.session.episode_length, self.action_center.device
        k = self.session.slate_size
        context: Context = {"t": 0, "return": torch.full((batch,), target, device=dev) * self.rtg_max[0],
                            "actions": torch.zeros(batch, h, self.action_dim, device=dev),
                            "returns": torch.zeros(batch, h, device=dev)}
        if self.raw is not None:
            context["slates"] = torch.zeros(batch, h, k, dtype=torch.long, device=dev)
            context["clicks"] = torch.zeros(batch, h, k, dtype=torch.bool, device=dev)
        else:
            context["states"] = torch.zeros(batch, h, self.obs_dim, device=dev)
        return context

    @torch.no_grad()
    def step(self, context: Context, states: Tensor, slates: Tensor, clicks: Tensor, rewards: Tensor
             ) -> tuple[Tensor, Context]:
        """CORL's evaluation: the last ``context`` steps of (return-to-go, state, action), the current
        action a zero placeholder; the return-to-go drops by the reward of the previous action."""
        t = context["t"]
        if t >= self.session.episode_length:
            raise ValueError(f"{self.name}: a session lasts {self.session.episode_length} steps")
        context["return"] = context["return"] - rewards
        context["returns"][:, t] = context["return"]
        if self.raw is not None:
            context["slates"][:, t], context["clicks"][:, t] = slates, clicks
        else:
            context["states"][:, t] = states
        lo = max(0, t + 1 - self.cfg.context)
        times = torch.arange(lo, t + 1, device=states.device).expand(states.shape[0], -1)
        if self.raw is not None:
            seq = self.raw(context["slates"][:, lo : t + 1], context["clicks"][:, lo : t + 1])
        else:
            seq = context["states"][:, lo : t + 1]
        u = self.net(seq, context["actions"][:, lo : t + 1], context["returns"][:, lo : t + 1] / self.rtg_max[0],
                     times)[:, -1]
        context["actions"][:, t] = u
        context["t"] = t + 1
        return self.action_center + self.action_scale * u, context


class _Warmup:
    """lr factor min((step + 1) / warmup, 1) (a picklable LambdaLR schedule)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup

    def __call__(self, step: int) -> float:
        return min((step + 1) / self.warmup, 1.0)
