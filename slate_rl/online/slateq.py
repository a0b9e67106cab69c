"""SlateQ (Ie et al., IJCAI 2019): slate values decomposed into item values, with the
simulator's true click model (privileged, as in the paper's baseline).

Item values ``Q(b, i)`` (one output per item, from the GRU belief). A slate's value is
``sum_{i in A} P(click i | A) Q(b, i)``; acting takes the top-k items by
``relevance(i) * Q(b, i)`` (the paper's greedy top-k slate optimisation), with
epsilon-random slots while training. Learning is the SARSA form of the decomposition: for
every clicked item i of step t::

    Q(b_t, i) <- 1 + gamma * sum_{j in A_{t+1}} P(click j | A_{t+1}) Q'(b_{t+1}, j)

where ``A_{t+1}`` is the next slate shown and ``P`` the true click probabilities recorded in
the replay buffer; ``Q'`` is a Polyak-averaged target. The stored action is the slate. This is
the ``corrected`` variant (tag ``slateq_corrected``).

The ``published`` variant (tag ``slateq``, the default) reproduces the published code
(naver/gems, ``modules/agents.py``), bugs included:

* off by one: the value learnt is ``Q(b_t, i)`` for the item ``i`` clicked in the slate of
  observation t, which ``b_t`` has already seen (not the slate chosen from ``b_t``);
* first click only: one item per slate with a click (the first clicked rank);
* the target's next slate is not the one shown but the greedy top-k of
  ``relevance(i) * Q'(b_{t+1}, i)``, with relevances of the user's raw preference vector after
  the step (no boredom, no short-term boost), and click probabilities from those relevances,
  divided by the diversity penalty in every row as soon as any topic appears
  ``diversity_threshold`` times among all the batch's next slates;
  ``y = 1 + gamma * sum_{j in A'} P(j) Q'(b_{t+1}, j)``, ``y = 1`` at the last step, where
  ``b_{t+1}`` comes from the online belief encoder (detached) and only the item-value head has a
  Polyak target;
* exploration replaces the whole slate by ``k`` uniformly random items (with replacement) with
  probability ``eps = eps_end + (eps_start - eps_end) * exp(-n / eps_decay)``, ``n`` the number
  of training sessions so far (warm-up included): from about 0.14 after the paper's 2,000
  warm-up sessions down to 0.01.

Acting uses the simulator's relevances with boredom in both variants (the published code's
acting relevances zero the wrong coordinates of bored topics; not reproduced).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slate_rl.core.config import Variant
from slate_rl.core.errors import ConfigError
from slate_rl.models.belief import BeliefEncoder
from slate_rl.models.nets import mlp, soft_update
from slate_rl.online.base import AgentInputs, SlateAgent, first_clicks
from slate_rl.online.config import SlateQConfig
from slate_rl.sim.core import TopicRec
from slate_rl.sim.protocol import Simulator


@dataclass(frozen=True)
class ClickModel:
    """The simulator's click model as the published SlateQ's target uses it (privileged): relevances of every
    item for raw user preference vectors, and slot click probabilities of slates."""

    items: Tensor
    """(num_items, D) the simulator's item table."""
    item_topic: Tensor
    """(num_items,) main topic of each item."""
    examination: Tensor
    """(k,) examination probability of each rank."""
    slope: float
    """Relevance sigmoid slope."""
    offset: float
    """Relevance sigmoid offset."""
    max_norm: float
    """Score normaliser (largest item norm)."""
    diversity_penalty: float
    """Attractiveness divisor of penalised slates."""
    diversity_threshold: int
    """Same-topic count that triggers the penalty."""

    @classmethod
    def of(cls, sim: Simulator) -> ClickModel:
        """TopicRec's click model (SlateQ's target is built on it); another simulator is refused."""
        if not isinstance(sim, TopicRec):
            raise ConfigError(f"SlateQ's target uses TopicRec's click model; {type(sim).__name__} has none: "
                              "train another agent in this environment")
        c = sim.config
        return cls(sim.items, sim.item_topic, sim.examination, float(c.slope), float(c.offset), sim.max_norm,
                   float(c.diversity_penalty), int(c.diversity_threshold))

    def relevance(self, users: Tensor) -> Tensor:
        """(..., D) raw preference vectors -> (..., num_items) relevances (no boredom, no boost)."""
        score = (users @ self.items.T).double() / self.max_norm
        return torch.sigmoid(self.slope * (score - self.offset)).float()

    def batch_click_probs(self, relevance: Tensor, slates: Tensor) -> Tensor:
        """Click probabilities (N, k) of the slates' items with these relevances (N, k); the diversity
        penalty applies to every row when any topic reaches the threshold across the whole batch (as
        the published target computes it)."""
        counts = torch.bincount(self.item_topic[slates].flatten())
        attract = relevance
        if self.diversity_penalty != 1.0 and counts.numel() and int(counts.max()) >= self.diversity_threshold:
            attract = relevance / self.diversity_penalty
        return attract * self.examination


class ItemQ(nn.Module):
    """Belief encoder and item-value head."""

    def __init__(self, belief: BeliefEncoder, num_items: int, hidden: int) -> None:
        super().__init__()
        self.belief = belief
        self.head = mlp([belief.hidden_dim, hidden, num_items])


class SlateQ(SlateAgent):
    """SlateQ with the true click model (privileged)."""

    name = "slateq"
    privileged = True

    def __init__(self, num_items: int, item_dim: int = 20, slate_size: int = 10,
                 config: SlateQConfig | None = None, item_table: Tensor | None = None,
                 variant: Variant = "corrected", click_model: ClickModel | None = None,
                 episode_length: int = 100) -> None:
        super().__init__()
        cfg = config or SlateQConfig()
        if variant == "published" and click_model is None:
            raise ConfigError("the published SlateQ needs the simulator's click model (click_model=ClickModel.of(sim))")
        self.cfg, self.num_items, self.slate_size, self.action_dim = cfg, num_items, slate_size, slate_size
        self.variant, self.click_model, self.episode_length = variant, click_model, episode_length
        self.user_steps: Tensor
        self.register_buffer("user_steps", torch.zeros((), dtype=torch.int64))
        self.q = ItemQ(BeliefEncoder(num_items, item_dim, slate_size, cfg.belief_dim, item_table), num_items,
                       cfg.hidden)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self.opt = torch.optim.Adam(self.q.parameters(), lr=cfg.lr)
        self.updates: Tensor
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"q": self.opt}

    def buffer_extras(self) -> dict[str, tuple[int, ...]]:
        if self.variant == "published":
            assert self.click_model is not None
            return {"users": (self.click_model.items.shape[1],)}
        return {"click_probs": (self.slate_size,)}

    def epsilon(self) -> float:
        """The published variant's current exploration probability (training sessions seen so far)."""
        return self.cfg.schedule(float(self.user_steps) / self.episode_length)

    @torch.no_grad()
    def random_act(self, slates: Tensor, clicks: Tensor, hidden: Any, width: float = 1.0
                   ) -> tuple[Tensor, Tensor, Any]:
        self.user_steps.add_(slates.shape[0])
        return super().random_act(slates, clicks, hidden, width)

    @torch.no_grad()
    def act(self, slates: Tensor, clicks: Tensor, hidden: Any, deterministic: bool = False,
            privileged: Tensor | None = None) -> tuple[Tensor, Tensor, Any]:
        if privileged is None:
            raise ValueError("SlateQ needs the relevance of every item (privileged) to act")
        belief = self.q.belief.step(slates, clicks, hidden)
        slate = (privileged * self.q.head(belief)).topk(self.slate_size, dim=1).indices
        if not deterministic and self.variant == "published":
            explore = torch.rand(slate.shape[0], 1, device=slate.device) < self.epsilon()
            uniform = torch.randint(0, self.num_items, slate.shape, device=slate.device)
            slate = torch.where(explore, uniform, slate)
            self.user_steps.add_(slates.shape[0])
        elif not deterministic and self.cfg.epsilon > 0:
            explore = torch.rand(slate.shape, device=slate.device) < self.cfg.epsilon
            slate = torch.where(explore, self.random_slates(slates.shape[0], slates.device), slate)
        return slate, slate.float(), belief

    def published_losses(self, ep: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The published code's loss (see the module doc): observation t's first click, valued at b_t."""
        assert self.click_model is not None
        slates, clicks = ep["slates"], ep["clicks"]
        h = ep["rewards"].shape[1]
        clicked, item = first_clicks(slates[:, :h], clicks[:, :h])  # observations 0 .. H-1
        beliefs = self.q.belief(slates, clicks)
        q = self.q.head(beliefs[:, :h]).gather(-1, item.unsqueeze(-1)).squeeze(-1)[clicked]
        with torch.no_grad():  # b_{t+1} (t < H-1) from the online encoder, detached; the target head
            q_next = self.q_target.head(beliefs[:, 1:h].detach())
            rel = self.click_model.relevance(ep["users"][:, : h - 1])  # raw user after step t+1
            nxt = (rel * q_next).topk(self.slate_size, dim=-1).indices  # A'
            sel = clicked[:, : h - 1]
            probs = self.click_model.batch_click_probs(rel.gather(-1, nxt)[sel], nxt[sel])
            next_value = torch.zeros_like(ep["rewards"])
            next_value[:, : h - 1][sel] = (probs * q_next.gather(-1, nxt)[sel]).sum(-1)
            y = 1.0 + self.cfg.gamma * next_value[clicked]
        loss = F.mse_loss(q, y) if q.numel() else q.sum()
        return loss, {"q_loss": loss.detach(), "q_mean": q.detach().mean() if q.numel() else loss.detach(),
                      "clicked_items": clicked.sum().float()}

    def losses(self, ep: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if self.variant == "published":
            return self.published_losses(ep)
        slates, clicks = ep["slates"], ep["clicks"]
        shown, clicked = slates[:, 1:], clicks[:, 1:]  # slate and clicks of step t+1, chosen from b_t
        q = self.q.head(self.q.belief(slates, clicks)[:, :-1]).gather(-1, shown)  # (B, H, k)
        with torch.no_grad():
            q_next = self.q_target.head(self.q_target.belief(slates, clicks)[:, 1:])  # values at b_{t+1}
            # value of the next slate actually shown: sum_j P(click j) Q'(b_{t+1}, j), 0 after the last step
            next_value = torch.zeros_like(ep["rewards"])
            next_value[:, :-1] = (ep["click_probs"][:, 1:] * q_next[:, :-1].gather(-1, shown[:, 1:])).sum(-1)
            y = 1.0 + self.cfg.gamma * next_value
        mask = clicked.float()
        n = mask.sum().clamp_min(1.0)
        loss = (F.mse_loss(q, y.unsqueeze(-1).expand_as(q), reduction="none") * mask).sum() / n
        return loss, {"q_loss": loss.detach(), "q_mean": q.detach().mean(), "clicked_items": mask.sum()}

    def update(self, episodes: dict[str, Tensor]) -> dict[str, float]:
        loss, metrics = self.losses(episodes)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        soft_update(self.q_target, self.q, self.cfg.tau)
        self.updates.add_(1)
        return {k: float(v) for k, v in metrics.items()}


def build_slateq(inputs: AgentInputs) -> SlateQ:
    """SlateQ with the simulator's true click model (privileged, no ranker)."""
    return SlateQ(inputs.num_items, inputs.item_dim, inputs.slate_size, inputs.config, inputs.encoder_table(None),
                  inputs.variant, inputs.click_model, inputs.episode_length)
