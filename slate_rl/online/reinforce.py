"""REINFORCE with a softmax policy over items (Williams 1992), the paper's slate-level baseline.

The actor's GRU belief ``b_t`` scores every item with an MLP; a slate is k items drawn from
the softmax without replacement (Gumbel-top-k, i.e. Plackett-Luce sampling), and the top-k
items at evaluation. On a batch of freshly collected episodes (on-policy)::

    loss = -mean_t [ log PL(slate_{t+1} | b_t) * (G_t - v_t) ] - c_H * entropy

with ``G_t = sum_j gamma^j r_{t+j}``, the exact Plackett-Luce log-probability of the shown
slate, and ``v_t`` a per-timestep baseline: an exponential moving average (rate
``baseline_rate``) of past returns-to-go, so that the paper's one-session batches still get
a useful advantage. The stored "action" of a step is the slate itself (item ids as floats).
This is the ``corrected`` variant (tag ``reinforce_corrected``).

The ``published`` variant (tag ``reinforce``, the default) reproduces the published code
(naver/gems, ``REINFORCESlate``), bugs included: a training slate is k items sampled from the
softmax *with* replacement (duplicates possible); the surrogate is, for every observation t
with a click, ``log(1 - (1 - pi(i | b_t))^k + 1e-6)`` at the *first* clicked item ``i`` of
observation t (which ``b_t`` has already seen: off by one, as in SlateQ), weighted by the
return-to-go ``G_t`` of the slate chosen from ``b_t``; no baseline, no entropy bonus; the loss
is the sum over steps (mean over the batch's episodes; the paper's batch is one episode).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from slate_rl.core.config import Variant
from slate_rl.models.belief import BeliefEncoder
from slate_rl.models.nets import mlp
from slate_rl.online.base import AgentInputs, SlateAgent, first_clicks
from slate_rl.online.config import ReinforceConfig


def returns_to_go(rewards: Tensor, gamma: float) -> Tensor:
    """(B, H) rewards -> (B, H) discounted returns from each step."""
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in range(rewards.shape[1] - 1, -1, -1):
        running = rewards[:, t] + gamma * running
        out[:, t] = running
    return out


def plackett_luce_log_prob(logits: Tensor, slates: Tensor) -> Tensor:
    """log P(slate) when items are drawn one by one from the softmax without replacement."""
    logits = logits.float()
    total = torch.zeros(slates.shape[:-1], device=logits.device)
    masked = logits
    for j in range(slates.shape[-1]):
        chosen = slates[..., j : j + 1]
        total = total + masked.gather(-1, chosen).squeeze(-1) - torch.logsumexp(masked, dim=-1)
        masked = masked.scatter(-1, chosen, float("-inf"))
    return total


class Reinforce(SlateAgent):
    """REINFORCE+SoftMax over the catalogue (on-policy)."""

    name = "reinforce"
    on_policy = True

    def __init__(self, num_items: int, item_dim: int = 20, slate_size: int = 10,
                 config: ReinforceConfig | None = None, item_table: Tensor | None = None,
                 episode_length: int = 100, variant: Variant = "corrected") -> None:
        super().__init__()
        cfg = config or ReinforceConfig()
        self.cfg, self.num_items, self.slate_size, self.variant = cfg, num_items, slate_size, variant
        # Published: random warm-up sessions, learned from as if on-policy (corrected: no warm-up).
        self.on_policy_warmup = variant == "published"
        self.action_dim = slate_size
        self.belief = BeliefEncoder(num_items, item_dim, slate_size, cfg.belief_dim, item_table)
        self.policy_net = mlp([cfg.belief_dim, cfg.hidden, num_items])
        self.opt = torch.optim.Adam(self.parameters(), lr=cfg.lr)
        self.updates: Tensor
        self.baseline: Tensor
        self.baseline_ready: Tensor
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))
        self.register_buffer("baseline", torch.zeros(episode_length))
        self.register_buffer("baseline_ready", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def act(self, slates: Tensor, clicks: Tensor, hidden: Any, deterministic: bool = False,
            privileged: Tensor | None = None) -> tuple[Tensor, Tensor, Any]:
        belief = self.belief.step(slates, clicks, hidden)
        logits = self.policy_net(belief)
        if not deterministic and self.variant == "published":  # k independent draws: duplicates possible
            slate = torch.multinomial(torch.softmax(logits.float(), dim=-1), self.slate_size, replacement=True)
            return slate, slate.float(), belief
        if not deterministic:  # Gumbel-top-k = sampling without replacement from the softmax
            logits = logits - torch.log(-torch.log(torch.rand_like(logits).clamp_min(1e-20)))
        slate = logits.topk(self.slate_size, dim=1).indices
        return slate, slate.float(), belief

    def published_losses(self, ep: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The published surrogate (see the module doc)."""
        h = ep["rewards"].shape[1]
        slates, clicks = ep["slates"][:, :h], ep["clicks"][:, :h]  # observations 0 .. H-1
        clicked, item = first_clicks(slates, clicks)
        probs = torch.softmax(self.policy_net(self.belief(ep["slates"], ep["clicks"])[:, :h]), dim=-1)
        pi = probs.gather(-1, item.unsqueeze(-1)).squeeze(-1)
        log_alpha = torch.log(1.0 - (1.0 - pi).pow(self.slate_size) + 1e-6)
        g = returns_to_go(ep["rewards"], self.cfg.gamma)
        loss = -(g * log_alpha * clicked).sum(dim=1).mean()
        return loss, {"policy_loss": loss.detach(), "return_to_go": g.mean(), "clicked_steps": clicked.sum().float()}

    def losses(self, ep: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if self.variant == "published":
            return self.published_losses(ep)
        beliefs = self.belief(ep["slates"], ep["clicks"])[:, :-1]  # b_t chooses slate t+1
        logits = self.policy_net(beliefs)
        shown = ep["actions"].long()  # the slates the policy chose
        logp = plackett_luce_log_prob(logits, shown)
        g = returns_to_go(ep["rewards"], self.cfg.gamma)
        with torch.no_grad():
            if not bool(self.baseline_ready):  # start from the first batch's returns
                self.baseline.copy_(g.mean(dim=0))
                self.baseline_ready.fill_(True)
            advantage = g - self.baseline
            self.baseline.lerp_(g.mean(dim=0), self.cfg.baseline_rate)
        log_soft = torch.log_softmax(logits, dim=-1)
        entropy = -(log_soft.exp() * log_soft).sum(-1).mean()
        loss = -(logp * advantage).mean() - self.cfg.entropy_coef * entropy
        return loss, {"policy_loss": loss.detach(), "entropy": entropy.detach(), "return_to_go": g.mean()}

    def update(self, episodes: dict[str, Tensor]) -> dict[str, float]:
        loss, metrics = self.losses(episodes)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.updates.add_(1)
        return {k: float(v) for k, v in metrics.items()}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"policy": self.opt}


def build_reinforce(inputs: AgentInputs) -> Reinforce:
    """REINFORCE + softmax over items (slate-level, no ranker)."""
    return Reinforce(inputs.num_items, inputs.item_dim, inputs.slate_size, inputs.config,
                     inputs.encoder_table(None), inputs.episode_length, inputs.variant)
