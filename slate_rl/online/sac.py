"""Soft Actor-Critic over a continuous slate action space (GeMS latent, TopK or kargmax).

Haarnoja et al. 2018, with twin Q and clipped double-Q, Polyak targets and automatic entropy
tuning (target entropy -action_dim). The state is a GRU belief: the actor and the critic each
own a :class:`~slate_rl.models.belief.BeliefEncoder`. For a batch of episodes with beliefs
``b_t`` (after observation t) and actions ``a_t``::

    critic:  1/2 sum_i (Q_i(b^c_t, a_t) - y_t)^2,
             y_t = r_t + gamma * (1 - d_t) * (min_i Q'_i(sg(b^c_{t+1}), a') - alpha * log pi(a' | b^a_{t+1}))
    actor:   alpha * log pi(a~ | b^a_t) - min_i Q_i(sg(b^c_t), a~),   a~ ~ pi(. | b^a_t)
    alpha:   -alpha * (log pi(a~ | b^a_t) + target_entropy)     (alpha = exp(log alpha))

as the published implementation does it:

* one update steps the critic first, then evaluates the actor loss with the *updated* Q
  networks (at the beliefs computed before the step), then steps the actor and the temperature;
* the target's next-state beliefs are the online critic GRU's (detached): the Polyak-averaged
  target holds the Q networks (its GRU copy is only used by Wolpertinger's refinement);
* the actions are tanh-squashed Gaussians scaled into the ranker's bounds, a = c + s * tanh(u),
  and log pi is the squashed Gaussian's, *without* the ``- sum log s`` term of the scaling
  (published; ``logprob_scale_term: true`` adds it). With the target entropy at -action_dim this
  decides how much the agent explores: without the term a GeMS half-width of ~4.3 gets about 4x
  less latent noise, TopK/kargmax's ~0.41 about 2.4x more.

``d_t`` is 1 at the last step of a session unless ``bootstrap_timeout`` (the session ends by a
time limit; the published implementation treats it as terminal, which we follow by default).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from slate_rl.models.belief import BeliefEncoder
from slate_rl.models.nets import mlp, soft_update
from slate_rl.models.rankers import KArgmax, Ranker, TopK
from slate_rl.online.base import Agent, AgentInputs
from slate_rl.online.config import SACConfig


class Critic(nn.Module):
    """Critic belief encoder and twin Q networks."""

    def __init__(self, belief: BeliefEncoder, action_dim: int, hidden: int) -> None:
        super().__init__()
        self.belief = belief
        self.q1 = mlp([belief.hidden_dim + action_dim, hidden, 1])
        self.q2 = mlp([belief.hidden_dim + action_dim, hidden, 1])

    def q(self, beliefs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([beliefs, actions], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class SAC(Agent):
    """SAC with a ranker turning its continuous action into a slate."""

    name = "sac"

    def __init__(self, ranker: Ranker, num_items: int, item_dim: int = 20, slate_size: int = 10,
                 config: SACConfig | None = None, item_table: Tensor | None = None) -> None:
        super().__init__()
        cfg = config or SACConfig()
        self.cfg, self.ranker = cfg, ranker.requires_grad_(False)
        self.action_dim = ranker.action_dim
        self.actor_belief = BeliefEncoder(num_items, item_dim, slate_size, cfg.belief_dim, item_table)
        self.actor = mlp([cfg.belief_dim, cfg.hidden, 2 * self.action_dim])
        self.critic = Critic(BeliefEncoder(num_items, item_dim, slate_size, cfg.belief_dim, item_table),
                             self.action_dim, cfg.hidden)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.init_alpha)))
        self.target_entropy = -float(self.action_dim)
        self.actor_opt = torch.optim.Adam(
            [*self.actor_belief.parameters(), *self.actor.parameters()], lr=cfg.policy_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.q_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.updates: Tensor
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    # ------------------------------------------------------------------ acting
    def policy(self, beliefs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """Scaled action and its log-probability (tanh correction; scale term if ``logprob_scale_term``)."""
        mean, log_std = self.actor(beliefs).chunk(2, dim=-1)
        log_std = log_std.clamp(-20.0, 2.0)
        std = log_std.exp()
        u = mean if deterministic else mean + std * self._noise(mean)
        a = torch.tanh(u)
        log_prob = (-0.5 * ((u - mean) / std) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_prob = log_prob - torch.log1p(-a.pow(2) + 1e-6).sum(-1)
        if self.cfg.logprob_scale_term:
            log_prob = log_prob - torch.log(self.ranker.action_scale).sum()
        return self.ranker.action_center + self.ranker.action_scale * a, log_prob

    @torch.no_grad()
    def act(self, slates: Tensor, clicks: Tensor, hidden: Any, deterministic: bool = False,
            privileged: Tensor | None = None) -> tuple[Tensor, Tensor, Any]:
        belief = self.actor_belief.step(slates, clicks, hidden)
        action, _ = self.policy(belief, deterministic)
        return self.ranker.rank(action), action, belief

    @torch.no_grad()
    def random_act(self, slates: Tensor, clicks: Tensor, hidden: Any, width: float = 1.0
                   ) -> tuple[Tensor, Tensor, Any]:
        action = self.ranker.uniform_actions(slates.shape[0], width)
        return self.ranker.rank(action), action, hidden

    # ------------------------------------------------------------------ learning
    def critic_loss(self, ep: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Critic loss on a batch of episodes; also the actor and critic beliefs (B, H+1, belief)."""
        slates, clicks, actions, rewards = ep["slates"], ep["clicks"], ep["actions"], ep["rewards"]
        alpha = self.log_alpha.exp().detach()
        b_actor = self.actor_belief(slates, clicks)
        b_critic = self.critic.belief(slates, clicks)
        with torch.no_grad():
            next_action, next_logp = self.policy(b_actor[..., 1:, :].detach())
            tq1, tq2 = self.critic_target.q(b_critic[..., 1:, :].detach(), next_action)
            not_done = torch.ones_like(rewards)
            if not self.cfg.bootstrap_timeout:
                not_done[..., -1] = 0.0
            y = rewards + self.cfg.gamma * not_done * (torch.minimum(tq1, tq2) - alpha * next_logp)
        q1, q2 = self.critic.q(b_critic[..., :-1, :], actions)
        loss = 0.5 * (self._mse(q1, y) + self._mse(q2, y))
        return loss, b_actor, b_critic, {"critic_loss": loss.detach(), "alpha": alpha,
                                         "q_mean": self._mean(q1.detach())}

    def actor_losses(self, b_actor: Tensor, b_critic: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """Actor and temperature losses at the critic's current Q networks."""
        alpha = self.log_alpha.exp()
        new_action, logp = self.policy(b_actor[..., :-1, :])
        self.critic.requires_grad_(False)  # the actor loss must leave critic gradients alone
        nq1, nq2 = self.critic.q(b_critic[..., :-1, :].detach(), new_action)
        self.critic.requires_grad_(True)
        actor_loss = self._mean(alpha.detach() * logp - torch.minimum(nq1, nq2))
        alpha_loss = -self._mean(alpha * (logp.detach() + self.target_entropy))
        return actor_loss, alpha_loss, {"actor_loss": actor_loss.detach(), "entropy": -self._mean(logp.detach())}

    def losses(self, ep: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Critic, actor and temperature losses at the same parameters (no optimisation; ``update``
        steps the critic before it evaluates the actor's loss)."""
        critic_loss, b_actor, b_critic, metrics = self.critic_loss(ep)
        actor_loss, alpha_loss, more = self.actor_losses(b_actor, b_critic)
        return critic_loss, actor_loss, alpha_loss, {**metrics, **more}

    def update(self, episodes: dict[str, Tensor]) -> dict[str, float]:
        return {k: float(v) for k, v in self.update_step(episodes).items()}

    def update_step(self, episodes: dict[str, Tensor]) -> dict[str, Tensor]:
        """One gradient step (critic, then actor and temperature at the updated critic, then Polyak); the
        metrics as tensors (no host sync). The losses are summed before ``backward``: a no-op for one agent,
        the sum over seeds for :class:`~slate_rl.online.multiseed.StackedSAC`."""
        critic_loss, b_actor, b_critic, metrics = self.critic_loss(episodes)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.sum().backward()
        self.critic_opt.step()
        actor_loss, alpha_loss, more = self.actor_losses(b_actor, b_critic)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
        self.actor_opt.step()
        if self.cfg.auto_entropy:
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.sum().backward()
            self.alpha_opt.step()
        soft_update(self.critic_target, self.critic, self.cfg.tau)
        self.updates.add_(1)
        return {**metrics, **more}

    # Hooks of the loss code above. A single agent reduces a batch to one scalar and draws its exploration
    # noise from torch's global generator; StackedSAC (online/multiseed.py) overrides them to keep a leading
    # seed dimension (one loss per seed) and to draw each seed's noise from that seed's own generator, so
    # the same loss code trains S seeds at once.
    def _noise(self, mean: Tensor) -> Tensor:
        """Standard normal noise shaped like ``mean``."""
        return torch.randn_like(mean)

    def _mean(self, x: Tensor) -> Tensor:
        """Mean over a batch."""
        return x.mean()

    def _mse(self, a: Tensor, b: Tensor) -> Tensor:
        """Mean squared error over a batch."""
        return F.mse_loss(a, b)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt, "critic": self.critic_opt, "alpha": self.alpha_opt}


# ------------------------------------------------------------------ builders (their registrations: online/config.py)
def sac_over(inputs: AgentInputs, ranker: Ranker, ranker_table: Tensor) -> SAC:
    """SAC acting through ``ranker``, its belief encoders starting from :meth:`AgentInputs.encoder_table`."""
    table = inputs.encoder_table(ranker_table)
    assert table is not None
    return SAC(ranker, inputs.num_items, table.shape[1], inputs.slate_size, inputs.config, table)


def build_sac_gems(inputs: AgentInputs) -> SAC:
    """SAC in the latent space of a GeMS checkpoint (the paper's method)."""
    return sac_over(inputs, inputs.gems, inputs.gems.gems.items.weight.detach().clone())


def build_sac_topk_ideal(inputs: AgentInputs) -> SAC:
    """SAC + TopK over the simulator's item table (privileged)."""
    return sac_over(inputs, TopK(inputs.sim_items, inputs.slate_size), inputs.sim_items)


def build_sac_topk_mf(inputs: AgentInputs) -> SAC:
    """SAC + TopK over MF item embeddings."""
    assert inputs.mf_items is not None
    return sac_over(inputs, TopK(inputs.mf_items, inputs.slate_size), inputs.mf_items)


def build_sac_kargmax(inputs: AgentInputs) -> SAC:
    """SAC + kargmax over the simulator's item table (privileged)."""
    return sac_over(inputs, KArgmax(inputs.sim_items, inputs.slate_size), inputs.sim_items)
