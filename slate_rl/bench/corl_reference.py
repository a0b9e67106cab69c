"""CORL-style reference implementations of TD3+BC, CQL, IQL and BC (eager, one class per algorithm).

Written from the behaviour of CORL's single-file scripts (``algorithms/offline/td3_bc.py``,
``cql.py``, ``iql.py``, ``any_percent_bc.py``), not their code. ``slate-rl bench offline``
(:mod:`slate_rl.bench.offline`) times our updates against these and ``tests/test_offline_algos.py``
checks that both compute the same numbers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from slate_rl.bench.shapes import ACTION_DIM, BATCH_SIZE, GAMMA, OBS_DIM


def corl_soft_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    for target_param, source_param in zip(target.parameters(), source.parameters(), strict=True):
        target_param.data.copy_((1 - tau) * target_param.data + tau * source_param.data)


def corl_net(in_dim: int, out_dim: int, n_hidden: int, out_act: nn.Module | None = None) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(in_dim, 256), nn.ReLU()]
    for _ in range(n_hidden - 1):
        layers += [nn.Linear(256, 256), nn.ReLU()]
    layers.append(nn.Linear(256, out_dim))
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


class CorlCritic(nn.Module):
    def __init__(self, n_hidden: int = 2) -> None:
        super().__init__()
        self.net = corl_net(OBS_DIM + ACTION_DIM, 1, n_hidden)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        multiple_actions = action.ndim == 3 and state.ndim == 2
        if multiple_actions:
            batch_size = state.shape[0]
            state = state.unsqueeze(1).repeat_interleave(action.shape[1], dim=1).reshape(-1, state.shape[-1])
            action = action.reshape(-1, action.shape[-1])
        q = torch.squeeze(self.net(torch.cat([state, action], dim=-1)), dim=-1)
        return q.reshape(batch_size, -1) if multiple_actions else q


class CorlActor(nn.Module):
    """CORL td3_bc.py ``Actor``: ``max_action * tanh-MLP(state)``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = corl_net(OBS_DIM, ACTION_DIM, 2, nn.Tanh())
        self.max_action = 1.0

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.max_action * self.net(state)


class CorlQ(nn.Module):
    """CORL td3_bc.py ``Critic``: Q(s, a) of shape (B, 1), the state-action pair concatenated per call."""

    def __init__(self) -> None:
        super().__init__()
        self.net = corl_net(OBS_DIM + ACTION_DIM, 1, 2)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([state, action], 1))


class CorlTD3BC:
    """CORL td3_bc.py ``TD3_BC.train``: two critics with their own optimisers, (B, 1) targets."""

    def __init__(self, device: torch.device) -> None:
        self.actor = CorlActor().to(device)
        self.actor_target = copy.deepcopy(self.actor)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.critic_1, self.critic_2 = CorlQ().to(device), CorlQ().to(device)
        self.critic_1_target, self.critic_2_target = copy.deepcopy(self.critic_1), copy.deepcopy(self.critic_2)
        self.critic_1_optimizer = torch.optim.Adam(self.critic_1.parameters(), lr=3e-4)
        self.critic_2_optimizer = torch.optim.Adam(self.critic_2.parameters(), lr=3e-4)
        self.max_action, self.total_it = 1.0, 0

    def train(self, batch: list[torch.Tensor]) -> dict[str, float]:
        log_dict = {}
        self.total_it += 1
        state, action, reward, next_state, done = batch
        not_done = 1 - done
        with torch.no_grad():
            noise = (torch.randn_like(action) * 0.2).clamp(-0.5, 0.5)
            next_action = (self.actor_target(next_state) + noise).clamp(-self.max_action, self.max_action)
            target_q = torch.min(self.critic_1_target(next_state, next_action),
                                 self.critic_2_target(next_state, next_action))
            target_q = reward + not_done * GAMMA * target_q
        current_q1, current_q2 = self.critic_1(state, action), self.critic_2(state, action)
        critic_loss = F.mse_loss(current_q1, target_q) + F.mse_loss(current_q2, target_q)
        log_dict["critic_loss"] = critic_loss.item()
        self.critic_1_optimizer.zero_grad()
        self.critic_2_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_1_optimizer.step()
        self.critic_2_optimizer.step()
        if self.total_it % 2 == 0:
            pi = self.actor(state)
            q = self.critic_1(state, pi)
            lmbda = 2.5 / q.abs().mean().detach()
            actor_loss = -lmbda * q.mean() + F.mse_loss(pi, action)
            log_dict["actor_loss"] = actor_loss.item()
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.actor_optimizer.step()
            corl_soft_update(self.critic_1_target, self.critic_1, 0.005)
            corl_soft_update(self.critic_2_target, self.critic_2, 0.005)
            corl_soft_update(self.actor_target, self.actor, 0.005)
        return log_dict


class CorlTanhGaussianPolicy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.base_network = corl_net(OBS_DIM, 2 * ACTION_DIM, 3)
        self.log_std_multiplier = nn.Parameter(torch.tensor(1.0))
        self.log_std_offset = nn.Parameter(torch.tensor(-1.0))

    def _dist(self, observations: torch.Tensor) -> TransformedDistribution:
        mean, log_std = torch.split(self.base_network(observations), ACTION_DIM, dim=-1)
        log_std = torch.clamp(self.log_std_multiplier * log_std + self.log_std_offset, -20.0, 2.0)
        return TransformedDistribution(Normal(mean, torch.exp(log_std)), TanhTransform(cache_size=1))

    def forward(self, observations: torch.Tensor, repeat: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if repeat is not None:
            observations = observations.unsqueeze(1).repeat_interleave(repeat, dim=1)
        dist = self._dist(observations)
        action_sample = dist.rsample()
        return action_sample, torch.sum(dist.log_prob(action_sample), dim=-1)


class CorlCQL:
    def __init__(self, device: torch.device) -> None:
        self.critic_1, self.critic_2 = CorlCritic(3).to(device), CorlCritic(3).to(device)
        self.target_critic_1, self.target_critic_2 = copy.deepcopy(self.critic_1), copy.deepcopy(self.critic_2)
        self.critic_1_optimizer = torch.optim.Adam(list(self.critic_1.parameters()), 3e-4)
        self.critic_2_optimizer = torch.optim.Adam(list(self.critic_2.parameters()), 3e-4)
        self.actor = CorlTanhGaussianPolicy().to(device)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), 3e-5)
        self.log_alpha = nn.Parameter(torch.tensor(0.0, device=device))
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=3e-5)
        self.target_entropy, self.n_actions, self.total_it = -float(ACTION_DIM), 10, 0

    def _q_loss(self, observations: torch.Tensor, actions: torch.Tensor, next_observations: torch.Tensor,
                rewards: torch.Tensor, dones: torch.Tensor, alpha: torch.Tensor, log_dict: dict[str, float]
                ) -> torch.Tensor:
        q1_predicted = self.critic_1(observations, actions)
        q2_predicted = self.critic_2(observations, actions)
        new_next_actions, next_log_pi = self.actor(next_observations)
        target_q_values = torch.min(self.target_critic_1(next_observations, new_next_actions),
                                    self.target_critic_2(next_observations, new_next_actions))
        td_target = rewards + (1.0 - dones) * GAMMA * target_q_values.unsqueeze(-1).detach()
        td_target = td_target.squeeze(-1)
        qf1_loss = F.mse_loss(q1_predicted, td_target.detach())
        qf2_loss = F.mse_loss(q2_predicted, td_target.detach())

        cql_random_actions = actions.new_empty((actions.shape[0], self.n_actions, ACTION_DIM)).uniform_(-1, 1)
        cql_current_actions, cql_current_log_pis = self.actor(observations, repeat=self.n_actions)
        cql_next_actions, cql_next_log_pis = self.actor(next_observations, repeat=self.n_actions)
        cql_current_actions, cql_current_log_pis = cql_current_actions.detach(), cql_current_log_pis.detach()
        cql_next_actions, cql_next_log_pis = cql_next_actions.detach(), cql_next_log_pis.detach()
        cql_q1_rand, cql_q2_rand = self.critic_1(observations, cql_random_actions), self.critic_2(
            observations, cql_random_actions)
        cql_q1_current = self.critic_1(observations, cql_current_actions)
        cql_q2_current = self.critic_2(observations, cql_current_actions)
        cql_q1_next = self.critic_1(observations, cql_next_actions)
        cql_q2_next = self.critic_2(observations, cql_next_actions)
        cql_std_q1 = torch.std(torch.cat([cql_q1_rand, q1_predicted.unsqueeze(1), cql_q1_next, cql_q1_current], 1), 1)
        cql_std_q2 = torch.std(torch.cat([cql_q2_rand, q2_predicted.unsqueeze(1), cql_q2_next, cql_q2_current], 1), 1)
        random_density = np.log(0.5**ACTION_DIM)
        cql_cat_q1 = torch.cat([cql_q1_rand - random_density, cql_q1_next - cql_next_log_pis,
                                cql_q1_current - cql_current_log_pis], dim=1)
        cql_cat_q2 = torch.cat([cql_q2_rand - random_density, cql_q2_next - cql_next_log_pis,
                                cql_q2_current - cql_current_log_pis], dim=1)
        cql_qf1_diff = torch.clamp(torch.logsumexp(cql_cat_q1, dim=1) - q1_predicted, -np.inf, np.inf).mean()
        cql_qf2_diff = torch.clamp(torch.logsumexp(cql_cat_q2, dim=1) - q2_predicted, -np.inf, np.inf).mean()
        cql_min_qf1_loss, cql_min_qf2_loss = cql_qf1_diff * 10.0, cql_qf2_diff * 10.0
        log_dict.update(
            qf1_loss=qf1_loss.item(), qf2_loss=qf2_loss.item(), alpha=alpha.item(),
            average_qf1=q1_predicted.mean().item(), average_qf2=q2_predicted.mean().item(),
            average_target_q=target_q_values.mean().item(), cql_std_q1=cql_std_q1.mean().item(),
            cql_std_q2=cql_std_q2.mean().item(), cql_q1_rand=cql_q1_rand.mean().item(),
            cql_q2_rand=cql_q2_rand.mean().item(), cql_min_qf1_loss=cql_min_qf1_loss.mean().item(),
            cql_min_qf2_loss=cql_min_qf2_loss.mean().item(), cql_qf1_diff=cql_qf1_diff.mean().item(),
            cql_qf2_diff=cql_qf2_diff.mean().item(), cql_q1_current_actions=cql_q1_current.mean().item(),
            cql_q2_current_actions=cql_q2_current.mean().item(), cql_q1_next_actions=cql_q1_next.mean().item(),
            cql_q2_next_actions=cql_q2_next.mean().item(), alpha_prime_loss=observations.new_tensor(0.0).item(),
            alpha_prime=observations.new_tensor(0.0).item(),
        )
        return qf1_loss + qf2_loss + cql_min_qf1_loss + cql_min_qf2_loss

    def train(self, batch: list[torch.Tensor]) -> dict[str, float]:
        observations, actions, rewards, next_observations, dones = batch
        self.total_it += 1
        new_actions, log_pi = self.actor(observations)
        alpha_loss = -(self.log_alpha * (log_pi + self.target_entropy).detach()).mean()
        alpha = self.log_alpha.exp()
        q_new_actions = torch.min(self.critic_1(observations, new_actions), self.critic_2(observations, new_actions))
        policy_loss = (alpha * log_pi - q_new_actions).mean()
        log_dict = dict(log_pi=log_pi.mean().item(), policy_loss=policy_loss.item(), alpha_loss=alpha_loss.item(),
                        alpha=alpha.item())
        qf_loss = self._q_loss(observations, actions, next_observations, rewards, dones, alpha, log_dict)
        self.alpha_optimizer.zero_grad()
        alpha_loss.backward()
        self.alpha_optimizer.step()
        self.actor_optimizer.zero_grad()
        policy_loss.backward()
        self.actor_optimizer.step()
        self.critic_1_optimizer.zero_grad()
        self.critic_2_optimizer.zero_grad()
        qf_loss.backward(retain_graph=True)
        self.critic_1_optimizer.step()
        self.critic_2_optimizer.step()
        corl_soft_update(self.target_critic_1, self.critic_1, 0.005)
        corl_soft_update(self.target_critic_2, self.critic_2, 0.005)
        return log_dict


class CorlMLP(nn.Module):
    """CORL iql.py ``MLP``: Linear/ReLU layers, optional output activation, optional squeeze of the last dim."""

    def __init__(self, in_dim: int, out_dim: int, out_act: nn.Module | None = None, squeeze: bool = False) -> None:
        super().__init__()
        self.net = corl_net(in_dim, out_dim, 2, out_act)
        self.squeeze = squeeze

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out.squeeze(dim=-1) if self.squeeze else out


class CorlTwinQ(nn.Module):
    """CORL iql.py ``TwinQ``: one concatenation, two squeezed MLPs; ``forward`` is their minimum."""

    def __init__(self) -> None:
        super().__init__()
        self.q1 = CorlMLP(OBS_DIM + ACTION_DIM, 1, squeeze=True)
        self.q2 = CorlMLP(OBS_DIM + ACTION_DIM, 1, squeeze=True)

    def both(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sa = torch.cat([state, action], 1)
        return self.q1(sa), self.q2(sa)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.min(*self.both(state, action))


class CorlGaussianPolicy(nn.Module):
    """CORL iql.py ``GaussianPolicy``: ``Normal(tanh-MLP(s), exp(clamp(log_std)))``."""

    def __init__(self) -> None:
        super().__init__()
        self.net = CorlMLP(OBS_DIM, ACTION_DIM, nn.Tanh())
        self.log_std = nn.Parameter(torch.zeros(ACTION_DIM, dtype=torch.float32))

    def forward(self, obs: torch.Tensor) -> Normal:
        return Normal(self.net(obs), torch.exp(self.log_std.clamp(-20.0, 2.0)))


class CorlIQL:
    """CORL iql.py ``ImplicitQLearning.train``: value step, critic step (and Polyak), actor step, each with
    its own backward pass and ``.item()`` of its loss."""

    def __init__(self, device: torch.device, max_steps: int) -> None:
        self.qf = CorlTwinQ().to(device)
        self.q_target = copy.deepcopy(self.qf).requires_grad_(False).to(device)
        self.vf = CorlMLP(OBS_DIM, 1, squeeze=True).to(device)
        self.actor = CorlGaussianPolicy().to(device)
        self.v_optimizer = torch.optim.Adam(self.vf.parameters(), lr=3e-4)
        self.q_optimizer = torch.optim.Adam(self.qf.parameters(), lr=3e-4)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.actor_lr_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.actor_optimizer, max_steps)
        self.total_it = 0

    def train(self, batch: list[torch.Tensor]) -> dict[str, float]:
        self.total_it += 1
        observations, actions, rewards, next_observations, dones = batch
        log_dict = {}
        with torch.no_grad():
            next_v = self.vf(next_observations)
        # value
        with torch.no_grad():
            target_q = self.q_target(observations, actions)
        v = self.vf(observations)
        adv = target_q - v
        v_loss = torch.mean(torch.abs(0.7 - (adv < 0).float()) * adv**2)
        log_dict["value_loss"] = v_loss.item()
        self.v_optimizer.zero_grad()
        v_loss.backward()
        self.v_optimizer.step()
        # critics
        rewards, dones = rewards.squeeze(dim=-1), dones.squeeze(dim=-1)
        targets = rewards + (1.0 - dones.float()) * GAMMA * next_v.detach()
        qs = self.qf.both(observations, actions)
        q_loss = cast(torch.Tensor, sum(F.mse_loss(q, targets) for q in qs)) / len(qs)
        log_dict["q_loss"] = q_loss.item()
        self.q_optimizer.zero_grad()
        q_loss.backward()
        self.q_optimizer.step()
        corl_soft_update(self.q_target, self.qf, 0.005)
        # actor
        exp_adv = torch.exp(3.0 * adv.detach()).clamp(max=100.0)
        bc_losses = -self.actor(observations).log_prob(actions).sum(-1, keepdim=False)
        policy_loss = torch.mean(exp_adv * bc_losses)
        log_dict["actor_loss"] = policy_loss.item()
        self.actor_optimizer.zero_grad()
        policy_loss.backward()
        self.actor_optimizer.step()
        self.actor_lr_schedule.step()
        return log_dict


class CorlBC:
    def __init__(self, device: torch.device) -> None:
        self.actor = corl_net(OBS_DIM, ACTION_DIM, 2, nn.Tanh()).to(device)
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=3e-4)
        self.max_action, self.total_it = 1.0, 0

    def train(self, batch: list[torch.Tensor]) -> dict[str, float]:
        self.total_it += 1
        state, action, _, _, _ = batch
        actor_loss = F.mse_loss(self.max_action * self.actor(state), action)
        log_dict = {"actor_loss": actor_loss.item()}
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()
        return log_dict


CORL_ALGOS = ("td3bc", "cql", "iql", "bc")
"""The offline methods CORL implements, restated here."""


def reference_step(name: str, data: dict[str, torch.Tensor], device: torch.device, total_steps: int
                   ) -> Callable[[], Any]:
    """One CORL-style step: ``ReplayBuffer.sample`` (numpy indices), ``.to(device)``, ``trainer.train``."""
    trainer: Any = {"td3bc": lambda: CorlTD3BC(device), "cql": lambda: CorlCQL(device),
                    "iql": lambda: CorlIQL(device, total_steps), "bc": lambda: CorlBC(device)}[name]()
    buffer = [data["observations"], data["actions"], data["rewards"][..., None], data["next_observations"],
              data["dones"][..., None]]
    size = buffer[0].shape[0]

    def step() -> Any:
        indices = np.random.randint(0, size, size=BATCH_SIZE)
        batch = [b.to(device) for b in [t[indices] for t in buffer]]
        return trainer.train(batch)

    return step
