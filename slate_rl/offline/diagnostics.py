"""Diagnostics of an offline policy at each validation: over-estimation and distance from the data.

:class:`Diagnostics` replaces the validation callback of :func:`~slate_rl.offline.loop.train_offline`:
it plays the ``val_sessions`` validation users exactly as
:func:`~slate_rl.offline.evaluation.evaluate_returns` does (the same seed, batches and deterministic
actions, so the validation return is the same number), records those sessions and returns the
return beside a dict of diagnostics (:data:`DIAGNOSTIC_KEYS`):

* **over-estimation** (methods with twin critics: TD3+BC, CQL, IQL; None otherwise): on the played
  sessions, ``q_mean`` is the mean over every (session, t) of ``min(Q1, Q2)(s_t, a_t)`` (the
  minimum, the value the critics' targets bootstrap from), divided by ``offline.reward_scale`` so it
  is in reward units; ``mc_return_mean`` the mean of the Monte-Carlo return
  ``G_t = sum_k gamma^k r_{t+k}`` within the session (:func:`~slate_rl.offline.sequence.returns_to_go`), and
  ``overestimation = q_mean - mc_return_mean``. ``G_t`` stops at the time limit: with
  ``offline.bootstrap_timeout`` false (the default) the critic is trained with the same truncation,
  so a faithful critic has ``overestimation`` near 0; with it true the critic bootstraps past the
  limit and its value exceeds ``G_t`` near the end of a session even when it is exact;
* **action distance** (methods acting on a state vector: TD3+BC, CQL, IQL, BC; None for the
  sequence methods): on :data:`SUBSET` dataset transitions spread evenly over the dataset (fixed
  indices, no random draw), the mean Euclidean distance between the policy's deterministic action
  and the dataset action, per dimension in units of the GeMS half-width ``action_scale``; beside it
  ``behaviour_noise`` (the dataset's ``behaviour.noise``, the std of the collection noise in the same
  units; None when the metadata has none) and ``noise_distance``, the mean norm of that noise,
  ``E||N(0, noise^2 I_d)||`` (the distance a policy equal to the noise-free behaviour would have,
  before clipping);
* **slate agreement** on the same transitions: ``slate_match``, the fraction whose decoded slate
  (the GeMS decoder the policy acts through) equals that of the dataset action, and ``slot_match``,
  the mean fraction of slots holding the same item.

Everything runs under ``torch.no_grad`` and draws no random number except the validation's own
(seeded with ``val_seed`` inside the loop's ``fork_rng``), so training is the same with or without
diagnostics. The cost is one belief encoding and one critic pass over the played sessions and one
actor and decoder pass over the subset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.models.belief import BeliefEncoder
from slate_rl.models.rankers import GeMSRanker
from slate_rl.offline.base import Normalizer, OfflineAlgo
from slate_rl.offline.config import OfflineConfig
from slate_rl.offline.datasets import encode_beliefs
from slate_rl.offline.nets import EnsembleQ
from slate_rl.offline.sequence import returns_to_go
from slate_rl.online.base import Agent
from slate_rl.online.rollouts import run_agent_sessions, user_keys
from slate_rl.sim.protocol import Simulator

DIAGNOSTIC_KEYS = ("q_mean", "mc_return_mean", "overestimation", "action_distance", "behaviour_noise",
                   "noise_distance", "slate_match", "slot_match")
SUBSET = 2048
"""Dataset transitions the action distance and slate agreement are measured on."""
BATCH = 4096
"""Validation sessions played at once (as :func:`~slate_rl.online.rollouts.policy_returns`)."""


def critic_of(algo: OfflineAlgo) -> EnsembleQ | None:
    """The algorithm's twin critics (TD3+BC, CQL, IQL), or None (BC, the sequence methods)."""
    critic = getattr(algo, "critic", None)
    return critic if isinstance(critic, EnsembleQ) else None


def mean_noise_norm(noise: float, dim: int) -> float:
    """``E||x||`` for ``x ~ N(0, noise^2 I_dim)``: ``noise * sqrt(2) * Gamma((d+1)/2) / Gamma(d/2)``."""
    return noise * math.sqrt(2.0) * math.exp(math.lgamma((dim + 1) / 2) - math.lgamma(dim / 2))


class Diagnostics:
    """The validation callback with diagnostics (module doc): ``()`` -> ``(validation return, diagnostics)``.

    ``policy`` is ``algo`` acting through ``encoder`` (the dataset's state encoder) and ``decoder``
    (:func:`~slate_rl.offline.policy.policy_for`); ``buffer`` is the prepared dataset (normalised states) the
    algorithm trains on, ``metadata`` the dataset's.
    """

    def __init__(self, sim: Simulator, policy: Agent, algo: OfflineAlgo, encoder: BeliefEncoder, normalizer: Normalizer,
                 decoder: GeMSRanker, buffer: EpisodeBuffer, cfg: OfflineConfig, metadata: Mapping[str, Any]) -> None:
        self.sim, self.policy, self.algo, self.encoder, self.normalizer, self.decoder, self.cfg = (
            sim, policy, algo, encoder, normalizer, decoder, cfg)
        self.acts_on_states = algo.acts_on_states
        noise = (metadata.get("behaviour") or {}).get("noise")
        self.noise = None if noise is None or not self.acts_on_states else float(noise)
        if self.acts_on_states:
            obs = buffer.data["observations"][: buffer.size].flatten(0, 1)
            actions = buffer.data["actions"][: buffer.size].flatten(0, 1)
            idx = torch.linspace(0, obs.shape[0] - 1, min(SUBSET, obs.shape[0]), device=obs.device).long()
            self.obs, self.actions = obs[idx], actions[idx]
            with torch.no_grad():
                self.slates = decoder.rank(self.actions)

    @torch.no_grad()
    def __call__(self) -> tuple[float, dict[str, float | None]]:
        cfg, sim, policy = self.cfg, self.sim, self.policy
        critic = critic_of(self.algo) if self.acts_on_states else None
        torch.manual_seed(cfg.val_seed)  # as evaluate_returns: the same validation return
        was_training = policy.training
        policy.eval()
        totals, q_sum, g_sum, count = [], 0.0, 0.0, 0
        for start in range(0, cfg.val_sessions, BATCH):
            keys = user_keys(cfg.val_seed, start, min(BATCH, cfg.val_sessions - start), sim.device)
            total, ep = run_agent_sessions(sim, policy, keys, "eval", record=critic is not None)
            totals.append(total)
            if critic is not None and ep is not None:
                states = self.normalizer(encode_beliefs(self.encoder, ep["slates"], ep["clicks"])[:, :-1])
                q = critic(states, self.algo.normalise(ep["actions"])).min(0).values / cfg.reward_scale
                q_sum += float(q.sum())
                g_sum += float(returns_to_go(ep["rewards"], cfg.gamma).sum())
                count += q.numel()
        policy.train(was_training)
        out: dict[str, float | None] = dict.fromkeys(DIAGNOSTIC_KEYS)
        if critic is not None:
            q_mean, g_mean = q_sum / count, g_sum / count
            out.update(q_mean=q_mean, mc_return_mean=g_mean, overestimation=q_mean - g_mean)
        if self.acts_on_states:
            mine = self.algo.act(self.obs)
            out["action_distance"] = float(((mine - self.actions) / self.algo.action_scale).norm(dim=-1).mean())
            if self.noise is not None:
                out["behaviour_noise"] = self.noise
                out["noise_distance"] = mean_noise_norm(self.noise, self.algo.action_dim)
            same = self.decoder.rank(mine) == self.slates
            out["slate_match"] = float(same.all(-1).float().mean())
            out["slot_match"] = float(same.float().mean())
        return float(torch.cat(totals).cpu().numpy().mean()), out  # evaluate_returns's float64 mean
