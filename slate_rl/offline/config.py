"""Settings of offline training (config.yaml's ``offline`` section) and of each offline algorithm
(its own section, named like the algorithm).

Torch-free, so that the workflow validates config.yaml without importing torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, is_dataclass, replace
from typing import Any, ClassVar, Literal

from slate_rl.core.artifacts import RESERVED_QUALITIES
from slate_rl.core.config import check_fields
from slate_rl.core.errors import ConfigError


def check_target(value: Any, key: str) -> float:
    """``value`` as a finite float, else one :class:`ConfigError` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise ConfigError(f"{key} must be a finite number (a multiple of the normalised maximum return), got "
                          f"{value!r}")
    return float(value)


@dataclass(frozen=True)
class Method:
    """What the pipeline knows of an offline method besides its settings: the ``METHOD`` of its config class.

    Everything else derives from it and from the class's fields: the config section and its schema
    (:func:`slate_rl.pipeline.load_schema`), ``train-offline``'s ``--<name>-*`` options, the ``{algo}`` wildcard,
    the tables, the scheduling priority of its jobs and the conformance tests' fast version.
    """

    display: str
    """Name in tables and plots."""
    algo: str
    """``"module:Class"`` of the algorithm (an :class:`~slate_rl.offline.base.OfflineAlgo`; the TD family is built
    as ``Class(obs_dim, action_center, action_scale, gamma, total_steps, config)``, the sequence family with a
    :class:`~slate_rl.offline.sequence.SessionSpec` after the config)."""
    family: Literal["td", "sequence"]
    """``td``: trained on transitions, acting from the current state; ``sequence``: trained on windows of
    sessions, acting with a per-user context."""
    priority: int = 0
    """Scheduling priority of its training jobs (higher first: the longest jobs start first)."""
    small: Mapping[str, Any] = field(default_factory=dict)
    """Settings of the small, fast version the conformance tests train (``tests/test_offline_algos.py``)."""


@dataclass(frozen=True)
class OfflineConfig:
    """The offline training loop (config.yaml's ``offline`` section)."""

    SECTION: ClassVar[str] = "offline"
    """The config.yaml section (and the prefix of every key in its errors)."""

    total_steps: int = 1_000_000
    """Gradient steps (CORL: 1M)."""
    batch_size: int = 256
    """Transitions per gradient step."""
    gamma: float = 0.8
    """Discount factor (the paper's online agents use 0.8, CORL 0.99)."""
    reward_scale: float = 1.0
    """Rewards are multiplied by this factor."""
    normalize_states: bool = True
    """Normalise states with the dataset's mean and std (CORL: on for TD3+BC)."""
    bootstrap_timeout: bool = False
    """Bootstrap the last step of a session (time limit) instead of treating it as terminal."""
    eval_interval: int = 50_000
    """Validate (online, fixed users) every this many steps."""
    val_sessions: int = 200
    """Validation users."""
    val_seed: int = 7_000_001
    """Seed of the validation users."""
    checkpoint_interval: int = 50_000
    """Write the resume checkpoint every this many steps."""
    log_interval: int = 1000
    """Log metrics and check the divergence guard every this many steps."""
    q_limit: float = 1e6
    """Stop when a Q-like quantity exceeds this magnitude."""

    def __post_init__(self) -> None:
        sec = self.SECTION
        check_fields(self, positive=("total_steps", "batch_size", "eval_interval", "val_sessions",
                                                "checkpoint_interval", "log_interval", "reward_scale", "q_limit"))
        if not 0.0 <= self.gamma < 1.0:
            raise ConfigError(f"{sec}.gamma must be in [0, 1), got {self.gamma}")


@dataclass(frozen=True)
class TDSteps:
    """The number of updates a TD method may set for itself (beside its hyperparameters)."""

    SECTION: ClassVar[str] = "offline"

    total_steps: int | None = None
    """Gradient steps of this method, replacing offline.total_steps (whose validation, checkpoint and log
    intervals are scaled by the same factor, as for dt and dd); null: offline.total_steps."""

    def updates(self) -> tuple[int | None, int | None]:
        """This method's own number of updates (None: offline.total_steps) and batch (None: offline.batch_size)."""
        return self.total_steps, None

    def check_steps(self) -> None:
        value = self.total_steps
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise ConfigError(f"{self.SECTION}.total_steps must be an integer > 0, or null for offline.total_steps; "
                              f"got {value!r}")


@dataclass(frozen=True)
class TD3BCConfig(TDSteps):
    """TD3+BC hyperparameters (CORL's defaults)."""

    SECTION: ClassVar[str] = "td3bc"
    METHOD: ClassVar[Method] = Method("TD3+BC", "slate_rl.offline.td3bc:TD3BC", "td", priority=2, small={"hidden": 32})
    """The method's registration (:class:`Method`)."""
    """The config.yaml section (and the prefix of every key in its errors)."""

    actor_lr: float = 3e-4
    """Learning rate of the actor."""
    critic_lr: float = 3e-4
    """Learning rate of the twin critics."""
    tau: float = 0.005
    """Polyak averaging rate of the target actor and critics."""
    policy_noise: float = 0.2
    """Std of the target policy smoothing noise, as a fraction of the action scale."""
    noise_clip: float = 0.5
    """Clip of the target policy smoothing noise, as a fraction of the action scale."""
    policy_freq: int = 2
    """Critic updates per actor (and target) update."""
    alpha: float = 2.5
    """Weight of the Q term against the BC term in the actor loss."""
    hidden: int = 256
    """Width of the hidden layers of the actor and critics."""
    layers: int = 2
    """Number of hidden layers of the actor and critics."""

    def __post_init__(self) -> None:
        self.check_steps()
        check_fields(self, positive=("actor_lr", "critic_lr", "policy_freq", "alpha", "hidden", "layers"),
                     fraction=("tau",), nonnegative=("policy_noise", "noise_clip"))


@dataclass(frozen=True)
class CQLConfig(TDSteps):
    """CQL hyperparameters (CORL's D4RL defaults)."""

    SECTION: ClassVar[str] = "cql"
    METHOD: ClassVar[Method] = Method("CQL", "slate_rl.offline.cql:CQL", "td",
                                     priority=6, small={"hidden": 32, "layers": 2, "n_actions": 4})
    """The method's registration (:class:`Method`)."""
    """The config.yaml section (and the prefix of every key in its errors)."""

    policy_lr: float = 3e-5
    """Learning rate of the policy and of the entropy temperature."""
    qf_lr: float = 3e-4
    """Learning rate of the twin critics (and of the Lagrange multiplier)."""
    tau: float = 0.005
    """Polyak averaging rate of the target critics."""
    target_update_period: int = 1
    """Updates between two Polyak steps of the target critics."""
    alpha_multiplier: float = 1.0
    """Multiplier of the entropy temperature (the temperature itself when not tuned)."""
    auto_entropy: bool = True
    """Tune the entropy temperature towards the target entropy -action_dim."""
    backup_entropy: bool = False
    """Subtract alpha * log pi(a' | s') in the TD target."""
    cql_alpha: float = 10.0
    """Weight of the conservative penalty."""
    n_actions: int = 10
    """Actions sampled per state and per source (uniform, pi(s), pi(s')) for the penalty."""
    importance_sample: bool = True
    """Importance-weight the sampled actions by their proposal densities."""
    temp: float = 1.0
    """Temperature T of the log-sum-exp."""
    max_target_backup: bool = False
    """Back up the max over n_actions policy actions at s' instead of one sample."""
    UNBOUNDED: ClassVar[tuple[str, ...]] = ("clip_diff_min", "clip_diff_max")
    """Fields whose infinite values mean no bound (CORL's defaults)."""

    clip_diff_min: float = -math.inf
    """Lower clip of the penalty difference (before the batch mean)."""
    clip_diff_max: float = math.inf
    """Upper clip of the penalty difference (before the batch mean)."""
    lagrange: bool = False
    """Tune the penalty weight by dual gradient descent (CQL-Lagrange)."""
    target_action_gap: float = -1.0
    """Target value of the penalty difference for the Lagrange version."""
    bc_steps: int = 0
    """First updates whose actor loss is the log-likelihood of the data actions."""
    orthogonal_init: bool = True
    """Orthogonal initialisation of the critics (CORL's default)."""
    log_std_multiplier: float = 1.0
    """Initial multiplier of the policy's log standard deviation (learnt)."""
    hidden: int = 256
    """Width of the hidden layers of the policy and critics."""
    layers: int = 3
    """Number of hidden layers of the policy and critics (CORL's CQL uses three)."""

    def __post_init__(self) -> None:
        self.check_steps()
        sec = self.SECTION
        check_fields(self, positive=("policy_lr", "qf_lr", "target_update_period", "cql_alpha", "n_actions",
                                            "temp", "hidden", "layers"),
                     fraction=("tau",), nonnegative=("alpha_multiplier", "bc_steps"))
        if not self.clip_diff_min < self.clip_diff_max:
            raise ConfigError(f"{sec}.clip_diff_min must be < {sec}.clip_diff_max, got {self.clip_diff_min}, "
                              f"{self.clip_diff_max}")


@dataclass(frozen=True)
class IQLConfig(TDSteps):
    """IQL hyperparameters (CORL's defaults)."""

    SECTION: ClassVar[str] = "iql"
    METHOD: ClassVar[Method] = Method("IQL", "slate_rl.offline.iql:IQL", "td", priority=3, small={"hidden": 32})
    """The method's registration (:class:`Method`)."""
    """The config.yaml section (and the prefix of every key in its errors)."""

    actor_lr: float = 3e-4
    """Initial learning rate of the actor (cosine-annealed to 0 over the run)."""
    qf_lr: float = 3e-4
    """Learning rate of the twin critics."""
    vf_lr: float = 3e-4
    """Learning rate of the value function."""
    tau: float = 0.005
    """Polyak averaging rate of the target critics."""
    expectile: float = 0.7
    """Expectile of the value loss (CORL's ``iql_tau``)."""
    beta: float = 3.0
    """Inverse temperature of the advantage weights (small: BC, large: maximise Q)."""
    exp_adv_max: float = 100.0
    """Clip of the exponentiated advantage weights."""
    deterministic: bool = False
    """Deterministic actor with a squared-error loss instead of the Gaussian log-likelihood."""
    hidden: int = 256
    """Width of the hidden layers of the actor, critics and value function."""
    layers: int = 2
    """Number of hidden layers of the actor, critics and value function."""

    def __post_init__(self) -> None:
        self.check_steps()
        sec = self.SECTION
        check_fields(self, positive=("actor_lr", "qf_lr", "vf_lr", "beta", "exp_adv_max", "hidden", "layers"),
                     fraction=("tau",))
        if not 0.0 < self.expectile < 1.0:
            raise ConfigError(f"{sec}.expectile must be in (0, 1), got {self.expectile}")


@dataclass(frozen=True)
class BCConfig(TDSteps):
    """BC hyperparameters (CORL's defaults)."""

    SECTION: ClassVar[str] = "bc"
    METHOD: ClassVar[Method] = Method("BC", "slate_rl.offline.bc:BC", "td", priority=1, small={"hidden": 32})
    """The method's registration (:class:`Method`)."""
    """The config.yaml section (and the prefix of every key in its errors)."""

    lr: float = 3e-4
    """Learning rate of the actor."""
    hidden: int = 256
    """Width of the hidden layers of the actor."""
    layers: int = 2
    """Number of hidden layers of the actor."""

    def __post_init__(self) -> None:
        self.check_steps()
        check_fields(self, positive=("lr", "hidden", "layers"))


@dataclass(frozen=True)
class FQLConfig(TDSteps):
    """Flow Q-learning hyperparameters (the published code's defaults, seohongpark/fql ``agents/fql.py``)."""

    SECTION: ClassVar[str] = "fql"
    METHOD: ClassVar[Method] = Method("FQL", "slate_rl.offline.fql:FQL", "td",
                                     priority=4, small={"hidden": 32, "layers": 2, "flow_steps": 3})
    """The method's registration (:class:`Method`)."""
    """The config.yaml section (and the prefix of every key in its errors)."""

    lr: float = 3e-4
    """Learning rate of every network (one Adam each, over the sum of the losses: the published single Adam)."""
    tau: float = 0.005
    """Polyak averaging rate of the target critics."""
    alpha: float = 10.0
    """Weight of the distillation term (one-step policy towards the flow policy's action) in the actor loss."""
    flow_steps: int = 10
    """Euler steps of the behaviour flow from noise to action (the distillation target)."""
    q_agg: Literal["mean", "min"] = "mean"
    """How the twin critics' values combine in the TD target and the actor loss."""
    normalize_q_loss: bool = False
    """Divide the actor's Q term by the batch mean |Q| (no gradient), as TD3+BC's lambda."""
    sample_actions: bool = True
    """Act with fresh noise z ~ N(0, I) into the one-step policy, as published (false: z = 0)."""
    hidden: int = 512
    """Width of the hidden layers of the flow, one-step policy and critics."""
    layers: int = 4
    """Number of hidden layers of the flow, one-step policy and critics."""
    layer_norm: bool = True
    """LayerNorm after each hidden layer of the critics (the published value network's)."""
    actor_layer_norm: bool = False
    """LayerNorm after each hidden layer of the flow and one-step policy."""

    def __post_init__(self) -> None:
        self.check_steps()
        check_fields(self, positive=("lr", "flow_steps", "hidden", "layers"), fraction=("tau",),
                     nonnegative=("alpha",))
        if self.q_agg not in ("mean", "min"):
            raise ConfigError(f"{self.SECTION}.q_agg must be mean or min, got {self.q_agg!r}")


@dataclass(frozen=True)
class IDQLConfig(TDSteps):
    """IDQL hyperparameters (the published code's defaults, philippe-eecs/IDQL ``ddpm_iql_learner.py``)."""

    SECTION: ClassVar[str] = "idql"
    METHOD: ClassVar[Method] = Method("IDQL", "slate_rl.offline.idql:IDQL", "td",
                                     priority=7, small={"hidden": 32, "actor_hidden": 32, "time_dim": 8, "samples": 4})
    """The method's registration (:class:`Method`)."""
    """The config.yaml section (and the prefix of every key in its errors)."""

    actor_lr: float = 3e-4
    """Initial learning rate of the diffusion actor (cosine-annealed to 0 over the run)."""
    critic_lr: float = 3e-4
    """Learning rate of the twin critics."""
    value_lr: float = 3e-4
    """Learning rate of the value function."""
    tau: float = 0.005
    """Polyak averaging rate of the target critics."""
    actor_tau: float = 0.001
    """Rate of the actor's exponential moving average, the network that samples actions."""
    expectile: float = 0.7
    """Expectile of the value loss (the published ``critic_hyperparam``)."""
    diffusion_steps: int = 5
    """DDPM steps T (variance-preserving schedule)."""
    samples: int = 64
    """Candidate actions the actor samples per state when acting (the published N)."""
    select: Literal["greedy", "expectile"] = "greedy"
    """Which candidate to play: the one of largest min_i Q'_i (the published evaluation), or one drawn with
    weights tau / 1 - tau by the sign of its advantage Q' - V (the published implicit policy)."""
    ddpm_temperature: float = 1.0
    """Scale of the noise of each reverse step."""
    time_dim: int = 64
    """Width of the learnt Fourier features of the diffusion step."""
    actor_hidden: int = 256
    """Width of the hidden layers of the noise model."""
    actor_layers: int = 3
    """Number of hidden layers of the noise model."""
    hidden: int = 256
    """Width of the hidden layers of the critics and value function."""
    layers: int = 2
    """Number of hidden layers of the critics and value function."""

    def __post_init__(self) -> None:
        self.check_steps()
        sec = self.SECTION
        check_fields(self, positive=("actor_lr", "critic_lr", "value_lr", "diffusion_steps", "samples",
                                     "ddpm_temperature", "time_dim", "actor_hidden", "actor_layers", "hidden",
                                     "layers"),
                     fraction=("tau", "actor_tau"))
        if not 0.0 < self.expectile < 1.0:
            raise ConfigError(f"{sec}.expectile must be in (0, 1), got {self.expectile}")
        if self.select not in ("greedy", "expectile"):
            raise ConfigError(f"{sec}.select must be greedy or expectile, got {self.select!r}")
        if self.time_dim % 2:
            raise ConfigError(f"{sec}.time_dim must be even (cosines and sines), got {self.time_dim}")


@dataclass(frozen=True)
class DTConfig:
    """Decision Transformer hyperparameters (CORL ``dt.py``'s defaults)."""

    SECTION: ClassVar[str] = "dt"
    METHOD: ClassVar[Method] = Method("DT", "slate_rl.offline.dt:DecisionTransformer", "sequence", priority=5)
    """The method's registration (:class:`Method`)."""

    def updates(self) -> tuple[int | None, int | None]:
        """Its own number of updates and batch (windows per update), replacing offline's."""
        return self.total_steps, self.batch_size
    """The config.yaml section (and the prefix of every key in its errors)."""

    total_steps: int = 100_000
    """Gradient steps (CORL: 100k); replaces offline.total_steps for this method, whose validation,
    checkpoint and log intervals are scaled by the same factor."""
    batch_size: int = 64
    """Windows (sub-sequences of sessions) per gradient step."""
    context: int = 20
    """Steps per window, and of history the policy sees when it acts."""
    embedding_dim: int = 128
    """Width of the token embeddings and of the transformer."""
    layers: int = 3
    """Transformer blocks."""
    heads: int = 1
    """Attention heads."""
    attention_dropout: float = 0.1
    """Dropout on the attention weights."""
    residual_dropout: float = 0.1
    """Dropout on each block's residual branches."""
    embedding_dropout: float = 0.1
    """Dropout on the token embeddings."""
    lr: float = 1e-4
    """AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.999
    """AdamW beta2."""
    warmup_steps: int = 10_000
    """Linear learning-rate warm-up: lr * min((step + 1) / warmup_steps, 1)."""
    clip_grad: float = 0.25
    """Gradient norm clip."""
    target_return: float = 1.0
    """Return the policy is conditioned on at test time, as a multiple of the dataset's best session
    return."""
    states: Literal["belief", "raw"] = "belief"
    """belief: the dataset's states; raw: the method's own encoding of each step's slate and clicks."""
    item_dim: int = 20
    """Item embedding size of the raw state encoder."""

    def __post_init__(self) -> None:
        sec = self.SECTION
        check_fields(self, positive=("total_steps", "batch_size", "context", "embedding_dim", "layers", "heads",
                                           "lr", "warmup_steps", "clip_grad", "item_dim"),
                     nonnegative=("weight_decay",))
        for key in ("attention_dropout", "residual_dropout", "embedding_dropout", "beta1", "beta2"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"{sec}.{key} must be in [0, 1), got {getattr(self, key)}")
        if self.embedding_dim % self.heads:
            raise ConfigError(f"{sec}.embedding_dim ({self.embedding_dim}) must be a multiple of {sec}.heads "
                              f"({self.heads})")
        check_target(self.target_return, f"{sec}.target_return")


@dataclass(frozen=True)
class DDConfig:
    """Decision Diffuser hyperparameters (their locomotion config's defaults unless stated)."""

    SECTION: ClassVar[str] = "dd"
    METHOD: ClassVar[Method] = Method("DD", "slate_rl.offline.dd:DecisionDiffuser", "sequence", priority=8)
    """The method's registration (:class:`Method`)."""

    def updates(self) -> tuple[int | None, int | None]:
        """Its own number of optimizer steps and batch (windows per step, accumulated batches included)."""
        return self.total_steps, self.batch_size * self.grad_accumulation
    """The config.yaml section (and the prefix of every key in its errors)."""

    total_steps: int = 200_000
    """Optimizer steps (theirs: 1M). Replaces offline.total_steps for this method (intervals scaled)."""
    batch_size: int = 32
    """Windows per micro-batch."""
    grad_accumulation: int = 2
    """Micro-batches whose gradients one optimizer step accumulates."""
    horizon: int = 20
    """Steps per planned state sequence (theirs: 100 on 1000-step episodes; see the module doc)."""
    dim: int = 128
    """Base channel width of the temporal U-Net."""
    dim_mults: list[int] = field(default_factory=lambda: [1, 4, 8])
    """Channel multipliers of the U-Net's resolutions (the horizon halves between them)."""
    kernel_size: int = 5
    """Temporal convolution kernel."""
    diffusion_steps: int = 200
    """Steps of the noise schedule (cosine)."""
    sampling_steps: int = 200
    """Denoising steps per decision: all of them (ancestral, as theirs), or fewer (strided DDIM)."""
    condition_dropout: float = 0.25
    """Probability of dropping the return condition in training (classifier-free guidance)."""
    guidance_weight: float = 1.2
    """Classifier-free guidance weight w."""
    test_return: float = 0.9
    """Return condition at test time, as a fraction of the per-timestep maximum of the data."""
    discount: float = 0.99
    """Discount of the return-to-go the condition is computed from."""
    hidden: int = 256
    """Width of the inverse dynamics MLP (two hidden layers)."""
    lr: float = 2e-4
    """Adam learning rate."""
    ema_decay: float = 0.995
    """Decay of the EMA networks the policy acts with."""
    ema_every: int = 10
    """Optimizer steps between EMA updates."""
    ema_start: int = 2000
    """Before this step the EMA networks are plain copies."""
    noise_scale: float = 0.5
    """Temperature of the initial noise and of the ancestral sampling noise (theirs: 0.5)."""

    def __post_init__(self) -> None:
        sec = self.SECTION
        check_fields(self, positive=("total_steps", "batch_size", "grad_accumulation", "horizon", "dim",
                                           "kernel_size", "diffusion_steps", "sampling_steps", "hidden", "lr",
                                           "ema_every"),
                     fraction=("ema_decay", "discount"), nonnegative=("guidance_weight", "ema_start", "noise_scale"))
        if not self.dim_mults or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in self.dim_mults):
            raise ConfigError(f"{sec}.dim_mults must be a non-empty list of positive integers, got "
                              f"{list(self.dim_mults)}")
        if any((self.dim * m) % 8 for m in self.dim_mults):
            raise ConfigError(f"{sec}.dim * each of {sec}.dim_mults must be a multiple of 8 (GroupNorm groups), "
                              f"got dim {self.dim}")
        factor = 2 ** (len(self.dim_mults) - 1)
        if self.horizon % factor or self.horizon < 2:
            raise ConfigError(f"{sec}.horizon ({self.horizon}) must be a multiple of {factor} (the U-Net halves it "
                              f"{len(self.dim_mults) - 1} times) and at least 2")
        if self.sampling_steps > self.diffusion_steps:
            raise ConfigError(f"{sec}.sampling_steps ({self.sampling_steps}) must be at most {sec}.diffusion_steps "
                              f"({self.diffusion_steps})")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise ConfigError(f"{sec}.condition_dropout must be in [0, 1), got {self.condition_dropout}")
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"{sec}.kernel_size must be odd, got {self.kernel_size}")
        check_target(self.test_return, f"{sec}.test_return")


@dataclass(frozen=True)
class OfflineDataConfig:
    """How the offline datasets are collected (config.yaml's ``offline_data`` section)."""

    SECTION: ClassVar[str] = "offline_data"
    """The config.yaml section (and the prefix of every key in its errors)."""

    behaviour_seed: int = 0
    """Seed of the online run whose checkpoints act (best = expert, medium = medium, last = replay)."""
    qualities: list[str] = field(default_factory=lambda: ["expert", "medium", "random", "replay", "medium_expert"])
    """Datasets the default target builds: base qualities or mixture names."""
    mixtures: dict[str, Any] = field(default_factory=lambda: {"medium_expert": {"medium": 0.5, "expert": 0.5}})
    """Mixtures: name -> {quality: weight}; episodes are split by weight."""
    episodes: int = 10_000
    """Episodes per dataset."""
    seed: int = 0
    """Seed of the users (each quality gets its own users) and of sampled actions."""
    noise: float = 0.1
    """Gaussian exploration noise on the behaviour's latent actions (std as a fraction of the bounds' half-width)."""
    step_mix_other: Literal["medium", "random"] = "medium"
    """The behaviour the ``step_mix`` quality mixes with the expert: each session draws the expert's probability
    p ~ U(0, 1), then every step acts with the expert (probability p) or with this one (both with ``noise``)."""
    sweep_noises: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2, 0.4, 0.8])
    """Noise levels of the ``noise_sweep`` quality (fractions of the half-width): the expert acts at one level per
    session, drawn uniformly among them."""
    deterministic: bool = True
    """Expert and medium act with their mean action plus noise (false: they sample their SAC policy)."""
    label_margin: float = 0.1
    """An expert/medium behaviour must return more than (1 + margin) x the random quality's return."""
    label_ratio: float = 0.9
    """The expert behaviour must return at least ratio x the collecting agent's deterministic test return; the
    medium behaviour within [ratio, 1 / ratio] x its target, medium_fraction x that return."""
    label_check: bool = True
    """Refuse mislabelled data (false: write it, recorded in the metadata)."""
    batch_size: int = 4096
    """Users simulated in parallel."""

    def __post_init__(self) -> None:
        check_fields(self, positive=("episodes", "batch_size"), nonnegative=("behaviour_seed", "seed", "noise",
                                                                             "label_margin"))
        sec = self.SECTION
        if not 0.0 < self.label_ratio <= 1.0:
            raise ConfigError(f"{sec}.label_ratio must be in (0, 1], got {self.label_ratio}")
        levels = self.sweep_noises
        if len(set(levels)) < 2 or not all(math.isfinite(x) and x >= 0 for x in levels):
            raise ConfigError(f"{sec}.sweep_noises must hold at least two distinct finite levels >= 0, got {levels}")
        for name in self.mixtures:
            if name in RESERVED_QUALITIES:
                raise ConfigError(f"{sec}.mixtures.{name}: the name {name!r} is taken ({RESERVED_QUALITIES[name]}); "
                                  "name the mixture otherwise")


METHODS: tuple[Any, ...] = (TD3BCConfig, CQLConfig, IQLConfig, BCConfig, FQLConfig, IDQLConfig, DTConfig, DDConfig)
"""The built-in offline methods, by their config classes (the registration: ``SECTION`` its name, ``METHOD`` the
rest), in the order of tables and plans."""
ALGO_CONFIGS: dict[str, Any] = {cls.SECTION: cls for cls in METHODS}
"""The config class of every registered offline method by name (its section of config.yaml is named like it): the
built-in :data:`METHODS`, then those :func:`register_method` adds (plugins, :func:`slate_rl.pipeline.load_plugins`)."""


def offline_algos() -> tuple[str, ...]:
    """The registered offline methods' names (the ``{algo}`` wildcard, ``offline.algos``, ``train-offline --algo``)."""
    return tuple(ALGO_CONFIGS)


def display_names() -> dict[str, str]:
    """Each registered offline method's name in tables and plots."""
    return {name: cls.METHOD.display for name, cls in ALGO_CONFIGS.items()}


def register_method(cls: Any, source: str) -> None:
    """Add offline method ``cls`` (a config dataclass with ``SECTION`` and ``METHOD``; ``source`` names where it
    came from in errors) to :data:`ALGO_CONFIGS`; registering the same class again does nothing."""
    if not (isinstance(cls, type) and is_dataclass(cls) and isinstance(getattr(cls, "SECTION", None), str)
            and isinstance(getattr(cls, "METHOD", None), Method)):
        raise ConfigError(f"{source}: {cls!r} is not an offline method's config (a dataclass with SECTION = "
                          "'<name>' and METHOD = Method(...), see slate_rl.offline.config.Method)")
    method: Method = getattr(cls, "METHOD")  # noqa: B009 (a narrowed type: the class is checked above)
    name: str = getattr(cls, "SECTION")  # noqa: B009
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError(f"{source}: method name {name!r} must be lower-case letters, digits and '_'")
    known = ALGO_CONFIGS.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ConfigError(f"{source}: method name {name!r} is taken by {known.__module__}.{known.__qualname__}; "
                          "give the method another SECTION")
    if method.family not in ("td", "sequence"):
        raise ConfigError(f"{source}: {cls.__name__}.METHOD.family must be td or sequence, got {method.family!r}")
    ALGO_CONFIGS[name] = cls


def with_total_steps(cfg: OfflineConfig, total_steps: int, batch_size: int) -> OfflineConfig:
    """``cfg`` for a method with its own number of updates and batch: the validation, checkpoint and log
    intervals scale with the updates, so every method's learning curve has the same number of points."""
    f = total_steps / cfg.total_steps
    return replace(cfg, total_steps=total_steps, batch_size=batch_size,
                   **{k: max(1, round(getattr(cfg, k) * f)) for k in ("eval_interval", "checkpoint_interval",
                                                                       "log_interval")})


def method_schedule(cfg: OfflineConfig, algo_cfg: Any) -> OfflineConfig:
    """The offline schedule of the method configured by ``algo_cfg``: ``cfg``, or its own number of updates and
    batch where it sets them (``<method>.total_steps``; the sequence methods always, with their batch of
    windows), intervals scaled (:func:`with_total_steps`)."""
    steps, batch = algo_cfg.updates()
    return cfg if steps is None else with_total_steps(cfg, steps, cfg.batch_size if batch is None else batch)
