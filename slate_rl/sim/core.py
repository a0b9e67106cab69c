"""Batched TopicRec core: one call advances B users with tensor operations on any device.

The state of B users is a :class:`SimState` of tensors; :meth:`TopicRec.reset` builds the
state of new users from their keys, :meth:`TopicRec.step` advances every user by one slate.
All randomness comes from :mod:`slate_rl.core.rng`, keyed per user, so a user's session
depends only on its key and the slates it is shown, never on the batch it shares.

Choices where the spec is silent (documented here and tested):

* Reset clicks use the raw user vector (no topic is bored yet and the short-term topic is
  only defined by those clicks, so there is no boost to apply).
* Ties in the oracle's top-k are broken by ``torch.topk``; with continuous scores ties have
  probability zero.
* Scores e_i . u~ that decide anything (the relevance of shown items, the oracle's final
  ranking) are computed row by row (elementwise product, then a sum over the 20 dimensions),
  and the relevance sigmoid in float64 (then rounded to float32). In float32,
  matrix products and vectorised ``sigmoid`` round differently depending on the batch size
  (a B = 1 matmul takes another kernel than B = 64; a vectorised loop's tail is computed by
  scalar code), so the oracle's ranking and the relevances, hence a user's clicks, could
  differ between batch sizes. The oracle first shortlists the top ``k + 2`` items with a fast
  float32 matmul, then ranks the shortlist exactly; the shortlist could only miss a top-k
  item if three scores tied to float32 precision.
* ``short_term_boost == 1`` and ``diversity_penalty == 1`` skip their multiplications, which
  are then identities (bit-for-bit the same result).
* Recent clicks, ``boredom_bookkeeping: published`` (default): the published simulator's two
  bounded lists, as fixed-width tensors filled from the left (front at column 0, -1 where empty):
  ``recent_topic`` holds the topics of recent clicks, reset clicks included; ``recent_order`` the
  steps of the clicks made by ``step`` only. Both keep their ``recent_clicks_maxlen`` newest
  entries; forgetting pops the front of *both* while the front step is older than
  ``t - boredom_window``, so reset-click topics (and whatever the misalignment leaves behind)
  stay in the topic list longer than the window says. Boredom counts the whole topic list. The
  published code's new short-term topic after boredom is the topic of the item whose *id* is the
  last clicked rank (``item_comp[rank]``); reproduced, with no effect at ``short_term_boost = 1``.
* ``boredom_bookkeeping: corrected``: one aligned list of (topic, order key) pairs where the
  order key is ``step * slate_size + rank`` (reset clicks at step 0): appending the new clicks in
  rank order, keeping the ``recent_clicks_maxlen`` most recent, then forgetting clicks older
  than ``t - boredom_window`` is a top-k over order keys.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TypeVar

import torch
from torch import Tensor

from slate_rl.core import rng
from slate_rl.core.errors import SlateRLError
from slate_rl.sim.config import TopicRecConfig
from slate_rl.sim.embeddings import main_topics, validate_item_embeddings

# Random streams of the simulator (policies use their own keys, see slate_rl.sim.policies).
STREAM_USER_NORMAL = 1
STREAM_USER_MIX = 2
STREAM_SHORT_TERM = 3
STREAM_CLICKS = 4


_D = TypeVar("_D")


def select(mask: Tensor, a: _D, b: _D) -> _D:
    """Per user, fields of dataclass-of-tensors ``a`` where ``mask`` (B,) else those of ``b``."""
    out = {}
    for f in fields(a):  # type: ignore[arg-type]
        x, y = getattr(a, f.name), getattr(b, f.name)
        out[f.name] = torch.where(mask.reshape(-1, *([1] * (x.ndim - 1))), x, y)
    return type(a)(**out)


@dataclass
class SimState:
    """State of B users (all tensors have leading dimension B)."""

    key: Tensor
    """(B,) int64 user keys: the user's whole randomness."""
    t: Tensor
    """(B,) int64 current step (0 after reset)."""
    user: Tensor
    """(B, D) float32 user preference vector u."""
    bored: Tensor
    """(B, T) bool bored flags per topic."""
    timer: Tensor
    """(B, T) int64 boredom timers."""
    recent_topic: Tensor
    """(B, L) int64 main topics of the remembered recent clicks, -1 where unused."""
    recent_order: Tensor
    """(B, L) int64, -1 where unused: published bookkeeping, the steps of the recent clicks (a list of its
    own, see the module doc); corrected, the order key step * slate_size + rank of each recent_topic."""
    short_term: Tensor
    """(B,) int64 short-term topic."""

    def where(self, mask: Tensor, other: SimState) -> SimState:
        """Per user: this state where ``mask`` else ``other``."""
        return select(mask, self, other)

    def index(self, idx: Tensor | slice) -> SimState:
        """The users selected by ``idx``."""
        return SimState(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})


@dataclass
class StepResult:
    """What one reset or step returns."""

    slate: Tensor
    """(B, k) int64 slate shown (oracle slots filled in)."""
    clicks: Tensor
    """(B, k) bool clicks."""
    reward: Tensor
    """(B,) float32 number of clicks (0 at reset)."""
    truncated: Tensor
    """(B,) bool True when the session reached its last step."""
    user_effective: Tensor
    """(B, D) float32 u~ used for this step's relevances (privileged)."""
    relevance: Tensor
    """(B, k) float32 relevance of each slate item (privileged)."""
    click_probability: Tensor
    """(B, k) float32 click probability of each slot: attractiveness x examination (privileged)."""


class TopicRec:
    """The TopicRec simulator for batches of users.

    Args:
        config: dynamics (see :class:`TopicRecConfig`).
        item_embeddings: ``(num_items, D)`` table (NumPy array or tensor).
        device: where every tensor lives.
    """

    def __init__(self, config: TopicRecConfig, item_embeddings: Tensor, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        table = torch.as_tensor(item_embeddings)
        validate_item_embeddings(table.cpu().numpy(), config.num_items, config.embedding_dim, "item_embeddings")
        self.items = table.to(device=self.device, dtype=torch.float32).contiguous()
        self.item_topic = main_topics(self.items, config.num_topics, config.topic_size)
        self.max_norm = float(self.items.norm(dim=1).max())
        k = config.slate_size
        ranks = torch.arange(k, dtype=torch.float32, device=self.device)
        decay = torch.tensor(config.position_decay, device=self.device)
        if config.click_model == "topdown":
            self.examination = decay**ranks
        else:
            self.examination = 0.5 * decay**ranks + 0.5 * decay ** (k - 1 - ranks)
        # Initial slate: for each topic the item with the largest block norm in that topic.
        blocks = self.items.reshape(config.num_items, config.num_topics, config.topic_size).norm(dim=-1)
        initial = blocks.argmax(dim=0)
        if k <= config.num_topics:
            initial = initial[:k]
        else:
            raise SlateRLError("slate_size larger than num_topics is not supported by the reset slate")
        self.initial_slate = initial
        self._rank_order = torch.arange(k, dtype=torch.int64, device=self.device)

    # ------------------------------------------------------------------ helpers
    def _block_norm_sum(self, u: Tensor) -> Tensor:
        c = self.config
        return u.reshape(*u.shape[:-1], c.num_topics, c.topic_size).norm(dim=-1).sum(dim=-1, keepdim=True)

    def _topic_mask(self, topics_flags: Tensor) -> Tensor:
        """(B, T) -> (B, D) by repeating each topic flag over its block."""
        return topics_flags.repeat_interleave(self.config.topic_size, dim=1)

    def effective_user(self, state: SimState) -> Tensor:
        """u~ of a state: bored blocks zeroed, short-term block boosted."""
        return self._effective(state.user, state.bored, state.short_term)

    def _effective(self, user: Tensor, bored: Tensor, short_term: Tensor) -> Tensor:
        c = self.config
        u = user * self._topic_mask(~bored)
        if c.short_term_boost != 1.0:
            boost = torch.ones_like(bored, dtype=u.dtype)
            boost.scatter_(1, short_term[:, None], c.short_term_boost)
            u = u * self._topic_mask(boost)
        return u

    @staticmethod
    def _exact_scores(emb: Tensor, user: Tensor) -> Tensor:
        """e_i . u for item embeddings (B, n, D) and users (B, D), row by row: the same bits for
        any batch size (unlike a matmul, whose kernel depends on the shape)."""
        return (emb * user.unsqueeze(1)).sum(dim=-1)

    @staticmethod
    def _shortlist(scores: Tensor, n: int, group: int = 8) -> Tensor:
        """Indices of the n largest scores per row (in no particular order).

        ``torch.topk`` over 1000 columns dominates the oracle's cost on CPU; taking the n best
        groups of ``group`` consecutive items by their maximum, then the n best items among
        those n * group candidates, gives the same set (every top-n item lies in a group whose
        maximum is at least its own score) for half the time.
        """
        b, m = scores.shape
        if m % group or n * group >= m:
            return scores.topk(n, dim=1).indices
        best_groups = scores.view(b, m // group, group).amax(dim=-1).topk(n, dim=1).indices
        candidates = (best_groups.unsqueeze(-1) * group + torch.arange(group, device=scores.device)).flatten(1)
        return candidates.gather(1, scores.gather(1, candidates).topk(n, dim=1).indices)

    def oracle_slate(self, user_effective: Tensor) -> Tensor:
        """Short-term oracle: the top-k items by e_i . u~, best first."""
        k = self.config.slate_size
        shortlist = self._shortlist(user_effective @ self.items.T, min(k + 2, self.config.num_items))
        best = self._exact_scores(self.items[shortlist], user_effective).topk(k, dim=1).indices
        return shortlist.gather(1, best)

    def check_slate(self, slate: Tensor) -> None:
        """Raise a clear error for slates of the wrong shape or with ids outside [-1, num_items)."""
        c = self.config
        if slate.ndim != 2 or slate.shape[1] != c.slate_size:
            raise SlateRLError(f"slate has shape {tuple(slate.shape)}, expected (batch, {c.slate_size})")
        if slate.dtype.is_floating_point or slate.dtype == torch.bool:
            raise SlateRLError(f"slate ids must be integers, got dtype {slate.dtype}")
        lo, hi = int(slate.min()), int(slate.max())
        if lo < -1 or hi >= c.num_items:
            bad = lo if lo < -1 else hi
            raise SlateRLError(
                f"slate contains item id {bad}; valid ids are 0..{c.num_items - 1}, or -1 for an oracle slot"
            )

    def _clicks(self, key: Tensor, t: Tensor, emb: Tensor, topics: Tensor, u_eff: Tensor
                ) -> tuple[Tensor, Tensor, Tensor]:
        """Relevance, click probabilities and sampled clicks of a slate with item embeddings ``emb`` (B, k, D) and
        main topics ``topics`` (B, k) (steps 5-7 of the spec)."""
        c = self.config
        score = self._exact_scores(emb, u_eff).to(torch.float64)
        if self.max_norm != 1.0:
            score = score / self.max_norm
        rel = torch.sigmoid(c.slope * (score - c.offset)).to(torch.float32)
        attract = rel
        if c.diversity_penalty != 1.0:
            same = (topics.unsqueeze(2) == topics.unsqueeze(1)).sum(dim=2)  # (B, k) count of own topic
            penalised = same.max(dim=1).values >= c.diversity_threshold
            attract = torch.where(penalised[:, None], rel / c.diversity_penalty, rel)
        u = rng.uniform(key, STREAM_CLICKS, t, c.slate_size)
        prob = attract * self.examination
        return rel, prob, u < prob

    @property
    def published_bookkeeping(self) -> bool:
        return self.config.boredom_bookkeeping == "published"

    def _recent_valid(self, state: SimState) -> Tensor:
        """(B, L) mask of the entries of the recent-topic list that boredom counts."""
        return state.recent_topic >= 0

    def _push(self, queue: Tensor, new: Tensor, mask: Tensor) -> Tensor:
        """Append ``new`` where ``mask`` (in column order) to left-filled bounded lists ``queue``
        (-1 = empty), keeping the newest ``recent_clicks_maxlen`` entries (a deque with maxlen)."""
        cap = self.config.recent_clicks_maxlen
        values = torch.cat([queue, new], dim=1)
        valid = torch.cat([queue >= 0, mask], dim=1)
        pos = valid.long().cumsum(dim=1) - 1
        drop = (valid.sum(dim=1, keepdim=True) - cap).clamp(min=0)
        pos = pos - drop
        keep = valid & (pos >= 0)
        out = torch.full((queue.shape[0], cap + 1), -1, dtype=queue.dtype, device=queue.device)
        out.scatter_(1, torch.where(keep, pos, cap), torch.where(keep, values, -1))
        return out[:, :cap]

    def _pop_front(self, queue: Tensor, n: Tensor) -> Tensor:
        """Remove the first ``n`` (B,) entries of left-filled lists."""
        cap = queue.shape[1]
        idx = torch.arange(cap, device=queue.device) + n[:, None]
        return torch.where(idx < cap, queue.gather(1, idx.clamp(max=cap - 1)), torch.full_like(queue, -1))

    def _remember_published(self, state_topic: Tensor, state_step: Tensor, t: Tensor, topics: Tensor,
                            clicks: Tensor, at_reset: bool) -> tuple[Tensor, Tensor]:
        """The published two-list bookkeeping (module doc): topics of every click, steps of step clicks."""
        topic = self._push(state_topic, topics, clicks)
        if at_reset:
            return topic, state_step
        step = self._push(state_step, t[:, None].expand_as(topics), clicks)
        # Steps are appended in time order, so the entries older than the window are a prefix.
        old = ((step >= 0) & (step < (t - self.config.boredom_window)[:, None])).sum(dim=1)
        return self._pop_front(topic, old), self._pop_front(step, old)

    def _remember(self, state_topic: Tensor, state_order: Tensor, t: Tensor, topics: Tensor, clicks: Tensor,
                  at_reset: bool = False) -> tuple[Tensor, Tensor]:
        """Append this step's clicks to the recent list(s), cap, forget old clicks (step 9)."""
        if self.published_bookkeeping:
            return self._remember_published(state_topic, state_order, t, topics, clicks, at_reset)
        c = self.config
        k = c.slate_size
        new_order = torch.where(clicks, t[:, None] * k + self._rank_order, torch.full_like(topics, -1))
        order = torch.cat([state_order, new_order], dim=1)
        topic = torch.cat([state_topic, topics], dim=1)
        oldest_kept = (t - c.boredom_window) * k
        order = torch.where(order >= oldest_kept[:, None], order, torch.full_like(order, -1))
        keep = order.topk(c.recent_clicks_maxlen, dim=1).indices
        order = order.gather(1, keep)
        return torch.where(order >= 0, topic.gather(1, keep), -1), order

    # ------------------------------------------------------------------ API
    def sample_users(self, key: Tensor) -> Tensor:
        """Preference vectors of the users with these keys."""
        c = self.config
        b = key.shape[0]
        p = rng.uniform(key, STREAM_USER_MIX, 0, c.num_topics) ** 3
        p = p / p.sum(dim=1, keepdim=True)
        g = rng.normal(key, STREAM_USER_NORMAL, 0, c.embedding_dim).reshape(b, c.num_topics, c.topic_size)
        u = ((0.4 * g).clamp(-1.0, 1.0).abs() * p[:, :, None]).reshape(b, c.embedding_dim)
        return u / self._block_norm_sum(u)

    def reset(self, key: Tensor) -> tuple[SimState, StepResult]:
        """New users with keys ``key`` (B,): show the initial slate and simulate its clicks."""
        c = self.config
        key = key.to(self.device, torch.int64)
        b = key.shape[0]
        t = torch.zeros(b, dtype=torch.int64, device=self.device)
        user = self.sample_users(key)
        slate = self.initial_slate.expand(b, -1)
        topics = self.item_topic[slate]
        rel, prob, clicks = self._clicks(key, t, self.items[slate], topics, user)
        empty = torch.full((b, c.recent_clicks_maxlen), -1, dtype=torch.int64, device=self.device)
        recent_topic, recent_order = self._remember(empty, empty, t, topics, clicks, at_reset=True)
        random_topic = rng.randint(key, STREAM_SHORT_TERM, 0, 1, c.num_topics)[:, 0]
        short_term = torch.where(clicks.any(dim=1), self._last_clicked_topic(topics, clicks), random_topic)
        state = SimState(
            key=key,
            t=t,
            user=user,
            bored=torch.zeros(b, c.num_topics, dtype=torch.bool, device=self.device),
            timer=torch.full((b, c.num_topics), c.boredom_duration, dtype=torch.int64, device=self.device),
            recent_topic=recent_topic,
            recent_order=recent_order,
            short_term=short_term,
        )
        zeros = torch.zeros(b, dtype=torch.float32, device=self.device)
        result = StepResult(
            slate=slate.clone(), clicks=clicks, reward=zeros, truncated=torch.zeros_like(clicks[:, 0]),
            user_effective=user, relevance=rel, click_probability=prob,
        )
        return state, result

    def _last_clicked_topic(self, topics: Tensor, clicks: Tensor) -> Tensor:
        last_rank = (clicks * (self._rank_order + 1)).argmax(dim=1)
        return topics.gather(1, last_rank[:, None]).squeeze(1)

    def _drift(self, user: Tensor, emb: Tensor, clicks: Tensor) -> Tensor:
        """u <- normalise(omega * u + (1 - omega) * e_i) for each clicked item, in rank order.

        Round j updates only the users with more than j clicks, taking their j-th clicked item,
        so the work is proportional to the number of clicks, not to B * k.
        """
        c = self.config
        counts = clicks.sum(dim=1)
        most = int(counts.max()) if counts.numel() else 0
        if most == 0:
            return user
        k = c.slate_size
        order = torch.where(clicks, self._rank_order, self._rank_order + k).argsort(dim=1)  # clicked ranks first
        user = user.clone()
        for j in range(most):
            idx = (counts > j).nonzero().squeeze(1)
            e = emb[idx, order[idx, j]]
            drifted = c.omega * user[idx] + (1.0 - c.omega) * e
            user[idx] = drifted / self._block_norm_sum(drifted)
        return user

    def _boredom(self, state: SimState) -> tuple[Tensor, Tensor, Tensor]:
        """Steps 1-3 of the spec: updated bored flags and timers, and the effective user vector."""
        c = self.config
        # 1. Boredom timers.
        timer = torch.where(state.bored, state.timer - 1, state.timer)
        bored = state.bored & (timer > 0)
        timer = torch.where(bored, timer, torch.full_like(timer, c.boredom_duration))
        # 2. Topics clicked >= threshold times in the recent window become bored.
        valid = self._recent_valid(state)
        counts = torch.zeros_like(timer).scatter_add_(1, state.recent_topic.clamp(min=0), valid.long())
        bored = bored | (counts >= c.boredom_threshold)
        # 3. Effective user vector.
        return bored, timer, self._effective(state.user, bored, state.short_term)

    def next_relevance(self, state: SimState) -> Tensor:
        """Privileged: relevance of every item (B, num_items) at the user's next step, i.e. with
        the effective user vector the next ``step`` will use (for SlateQ and analysis)."""
        c = self.config
        _, _, u_eff = self._boredom(state)
        score = (u_eff @ self.items.T).to(torch.float64)
        if self.max_norm != 1.0:
            score = score / self.max_norm
        return torch.sigmoid(c.slope * (score - c.offset)).to(torch.float32)

    def step(self, state: SimState, slate: Tensor, validate: bool = True) -> tuple[SimState, StepResult]:
        """Show ``slate`` (B, k) to every user (-1 marks an oracle slot); return the new state."""
        c = self.config
        slate = slate.to(self.device)
        if validate:
            self.check_slate(slate)
            if slate.shape[0] != state.key.shape[0]:
                raise SlateRLError(
                    f"slate has {slate.shape[0]} rows but the state holds {state.key.shape[0]} users; "
                    "pass one slate per user"
                )
        slate = slate.to(torch.int64)
        t = state.t + 1
        # 1-3. Boredom timers, new boredom, effective user vector.
        bored, timer, u_eff = self._boredom(state)
        # 4. Oracle slots.
        oracle = slate < 0
        if bool(oracle.any()):
            slate = torch.where(oracle, self.oracle_slate(u_eff), slate)
        # 5-7. Relevance, attractiveness, clicks.
        emb, topics = self.items[slate], self.item_topic[slate]
        rel, prob, clicks = self._clicks(state.key, t, emb, topics, u_eff)
        # 8. Drift, one clicked item at a time in rank order.
        user = self._drift(state.user, emb, clicks)
        # 9. Recent clicks and short-term topic.
        recent_topic, recent_order = self._remember(state.recent_topic, state.recent_order, t, topics, clicks)
        any_click = clicks.any(dim=1)
        short_bored = bored.gather(1, state.short_term[:, None]).squeeze(1)
        if self.published_bookkeeping:  # the published code indexes item topics by the clicked *rank*
            last_rank = (clicks * (self._rank_order + 1)).argmax(dim=1)
            new_short = self.item_topic[last_rank]
        else:
            new_short = self._last_clicked_topic(topics, clicks)
        short_term = torch.where(short_bored & any_click, new_short, state.short_term)
        # 10. Reward and time limit.
        new_state = SimState(state.key, t, user, bored, timer, recent_topic, recent_order, short_term)
        result = StepResult(
            slate=slate, clicks=clicks, reward=clicks.sum(dim=1, dtype=torch.float32).to(torch.float32),
            truncated=t >= c.episode_length, user_effective=u_eff, relevance=rel, click_probability=prob,
        )
        return new_state, result
