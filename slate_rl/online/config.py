"""Settings of the online agents and their training loop (config.yaml's ``online``, ``sac``,
``reinforce``, ``slateq`` sections and ``agents.belief_table``).

Torch-free, so that the workflow validates config.yaml without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from slate_rl.core.config import check_fields
from slate_rl.core.errors import ConfigError

BeliefTable = Literal["scratch", "ranker"]


@dataclass(frozen=True)
class BeliefAgentConfig:
    """Settings every belief-based agent without SAC's split learning rates shares."""

    SECTION: ClassVar[str] = "agent"
    """The config.yaml section (and the prefix of every key in its errors)."""

    gamma: float = 0.8
    """Discount factor."""
    lr: float = 1e-3
    """Adam learning rate (networks and belief encoder)."""
    hidden: int = 256
    """Hidden layer width."""
    belief_dim: int = 20
    """GRU belief size."""

    def __post_init__(self) -> None:
        check_fields(self)
        sec = self.SECTION
        if not 0.0 <= self.gamma < 1.0:
            raise ConfigError(f"{sec}.gamma must be in [0, 1), got {self.gamma}")
        if self.lr <= 0 or self.hidden < 1 or self.belief_dim < 1:
            raise ConfigError(f"{sec}.lr must be > 0, {sec}.hidden and {sec}.belief_dim >= 1")


@dataclass(frozen=True)
class SACConfig:
    """SAC hyperparameters (the paper's values by default)."""

    SECTION: ClassVar[str] = "sac"
    """The config.yaml section (and the prefix of every key in its errors)."""

    gamma: float = 0.8
    """Discount factor."""
    tau: float = 0.002
    """Polyak averaging rate of the target critic."""
    q_lr: float = 1e-3
    """Learning rate of the critic (Q networks and critic belief)."""
    policy_lr: float = 3e-3
    """Learning rate of the actor (policy network and actor belief)."""
    alpha_lr: float = 1e-3
    """Learning rate of the entropy temperature."""
    hidden: int = 256
    """Hidden layer width of the policy and Q networks."""
    belief_dim: int = 20
    """GRU belief size."""
    init_alpha: float = 1.0
    """Initial entropy temperature."""
    auto_entropy: bool = True
    """Tune alpha towards the target entropy -action_dim."""
    bootstrap_timeout: bool = False
    """Bootstrap the last step of a session (time limit) instead of treating it as terminal."""
    logprob_scale_term: bool = False
    """Subtract sum log(action_scale) from log pi (the density of the scaled action); the published code
    leaves it out, which changes the exploration that entropy tuning settles on (module doc)."""

    def __post_init__(self) -> None:
        check_fields(self)
        sec = self.SECTION
        if not 0.0 <= self.gamma < 1.0:
            raise ConfigError(f"{sec}.gamma must be in [0, 1), got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"{sec}.tau must be in (0, 1], got {self.tau}")


@dataclass(frozen=True)
class ReinforceConfig(BeliefAgentConfig):
    """REINFORCE+SoftMax hyperparameters (gamma discounts the returns-to-go)."""

    SECTION: ClassVar[str] = "reinforce"
    """The config.yaml section (and the prefix of every key in its errors)."""

    entropy_coef: float = 0.0
    """Weight of the softmax entropy bonus."""
    baseline_rate: float = 0.05
    """Update rate of the moving-average baseline of returns-to-go."""


@dataclass(frozen=True)
class SlateQConfig(BeliefAgentConfig):
    """SlateQ hyperparameters."""

    SECTION: ClassVar[str] = "slateq"
    """The config.yaml section (and the prefix of every key in its errors)."""

    tau: float = 0.002
    """Polyak averaging rate of the target network."""
    epsilon: float = 0.1
    """Corrected variant: probability that a slot shows a random item while training."""
    epsilon_start: float = 1.0
    """Published variant: whole-slate exploration probability at session 0 (decays exponentially)."""
    epsilon_end: float = 0.01
    """Published variant: the exploration probability it decays to."""
    epsilon_decay: float = 1000.0
    """Published variant: decay time of the exploration probability, in training sessions."""

    def __post_init__(self) -> None:
        sec = self.SECTION
        super().__post_init__()
        for name in ("epsilon", "epsilon_start", "epsilon_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{sec}.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.epsilon_decay <= 0:
            raise ConfigError(f"{sec}.epsilon_decay must be > 0, got {self.epsilon_decay}")

    def schedule(self, sessions: float) -> float:
        """The published variant's exploration probability after ``sessions`` training sessions."""
        return self.epsilon_end + (self.epsilon_start - self.epsilon_end) * math.exp(-sessions / self.epsilon_decay)


@dataclass(frozen=True)
class OnlineConfig:
    """Schedule of online training (config.yaml's ``online`` section); paper values by default."""

    SECTION: ClassVar[str] = "online"
    """The config.yaml section (and the prefix of every key in its errors)."""

    total_steps: int = 100_000
    """Training steps."""
    sessions_per_step: int = 1
    """Sessions collected per step (users simulated in parallel)."""
    updates_per_step: int = 1
    """Gradient steps per training step."""
    batch_size: int = 20
    """Episodes per gradient step."""
    buffer_capacity: int = 10_000
    """Replay capacity in episodes."""
    warmup_sessions: int = 2000
    """Sessions of uniformly random actions, with no gradient step, at the start (part of the total)."""
    warmup_action_width: float = 0.5
    """Warm-up actions are uniform in centre +- width x scale of the ranker's box: the published code draws
    centre + scale * (U(0, 1) - 0.5), the middle half (0.5); 1.0 covers the whole box."""
    val_interval: int = 1000
    """Validate every this many training steps."""
    val_sessions: int = 200
    """Validation users (fixed)."""
    val_seed: int = 7_000_001
    """Seed of the validation users."""
    checkpoint_interval: int = 1000
    """Write last.ckpt every this many training steps."""
    medium_fraction: float = 0.5
    """The medium checkpoint is the validation snapshot closest to this fraction of the best validation return."""

    def __post_init__(self) -> None:
        check_fields(self)
        sec = self.SECTION
        for name in ("total_steps", "sessions_per_step", "updates_per_step", "batch_size", "buffer_capacity",
                     "val_interval", "val_sessions", "checkpoint_interval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{sec}.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.medium_fraction < 1.0:
            raise ConfigError(f"{sec}.medium_fraction must be in (0, 1), got {self.medium_fraction}")
        if not 0.0 < self.warmup_action_width <= 1.0:
            raise ConfigError(f"{sec}.warmup_action_width must be in (0, 1], got {self.warmup_action_width}")
        if self.warmup_sessions < 0:
            raise ConfigError(f"{sec}.warmup_sessions must be >= 0, got {self.warmup_sessions}")


@dataclass(frozen=True)
class AgentBuildConfig:
    """How agents are built (config.yaml's ``agents.belief_table``)."""

    SECTION: ClassVar[str] = "agents"
    """The config.yaml section (and the prefix of every key in its errors)."""

    belief_table: BeliefTable = "scratch"
    """Initial item table of the belief encoders: scratch (a fresh N(0, 1) table, the published code) or ranker
    (the ranker's table for SAC agents, today's earlier behaviour)."""
