"""Settings of the online agents and their training loop (config.yaml's ``online``, ``sac``,
``reinforce``, ``slateq`` sections and ``agents.belief_table``), and the agents' registrations.

**Registration.** An online agent is known to the pipeline by its :class:`AgentKind` (name, display name,
builder, config class, what it needs, whether it has variants, test sizes). The built-in kinds are
:data:`AGENTS`; a plugin module adds its own with ``ONLINE_AGENTS`` (:func:`slate_rl.pipeline.load_plugins`).
Everything else derives from the registered kinds: the tag grammar (:func:`parse_agent_tag`, the
``{agent_tag}`` wildcard), config.yaml's ``agents.names`` and ``agents.variants`` and each config section's
schema, ``train-agent``'s options, the workflow's inputs of an agent job, the report's names and order.

**Agent tags** (the ``{agent_tag}`` of artifact paths): a kind that needs a GeMS checkpoint is tagged
``<name>_<gems tag>`` (``sac_gems_d32_beta1_lc0.5_scratch_s58407201``); a kind with variants is tagged
``<name>`` for the ``published`` variant and ``<name>_corrected`` for the ``corrected`` one; any other
kind ``<name>``.

Torch-free, so that the workflow validates config.yaml without importing torch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, is_dataclass
from typing import Any, ClassVar, Literal

from slate_rl.core.artifacts import GEMS_TAG_WILDCARD, VARIANTS
from slate_rl.core.config import Variant, check_fields
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


# ------------------------------------------------------------------------------------------ registration
AgentNeed = Literal["gems", "mf", "click_model"]
NEEDS: dict[str, str] = {"gems": "a GeMS checkpoint (--gems)", "mf": "MF item embeddings (--mf)",
                         "click_model": "the simulator's click model (ClickModel.of(sim))"}
"""What an agent may need besides the simulator's item table, and how a user gives it."""
CORRECTED_SUFFIX = "_corrected"


@dataclass(frozen=True)
class AgentKind:
    """What the pipeline knows of an online agent: its registration (see the module doc)."""

    name: str
    """The agent's name: config.yaml's ``agents.names`` entry and the base of its tags."""
    display: str
    """Name in tables and plots."""
    build: str
    """``"module:function"`` of its builder, ``function(inputs: AgentInputs) -> Agent``
    (:class:`slate_rl.online.registry.AgentInputs`): an untrained agent, networks drawn from torch's global
    generator."""
    config: type
    """Its settings' dataclass (its ``SECTION`` is the config.yaml section; agents may share one, e.g. ``sac``)."""
    needs: tuple[AgentNeed, ...] = ()
    """What it needs besides the simulator's table (:data:`NEEDS`): ``gems`` (its tags name the GeMS checkpoint),
    ``mf``, ``click_model`` (privileged: the simulator's click model)."""
    variants: bool = False
    """Whether it has a ``published`` (its published code, bugs included) and a ``corrected`` variant."""
    small: Mapping[str, Any] = field(default_factory=dict)
    """Settings of its small, fast version, for the conformance tests (``tests/test_agents.py``)."""


AGENTS: tuple[AgentKind, ...] = (
    AgentKind("sac_gems", "SAC+GeMS", "slate_rl.online.sac:build_sac_gems", SACConfig, ("gems",)),
    AgentKind("sac_topk_ideal", "SAC+TopK (ideal)", "slate_rl.online.sac:build_sac_topk_ideal", SACConfig),
    AgentKind("sac_topk_mf", "SAC+TopK (MF)", "slate_rl.online.sac:build_sac_topk_mf", SACConfig, ("mf",)),
    AgentKind("sac_kargmax", "SAC+kargmax", "slate_rl.online.sac:build_sac_kargmax", SACConfig),
    AgentKind("sac_wknn", "SAC+WkNN", "slate_rl.online.wolpertinger:build_sac_wknn", SACConfig, variants=True),
    AgentKind("reinforce", "REINFORCE+SoftMax", "slate_rl.online.reinforce:build_reinforce", ReinforceConfig,
              variants=True),
    AgentKind("slateq", "SlateQ", "slate_rl.online.slateq:build_slateq", SlateQConfig, ("click_model",),
              variants=True),
)
"""The built-in agents, in the papers' order (SAC+GeMS, then the baselines): the order of tables."""
AGENT_KINDS: dict[str, AgentKind] = {kind.name: kind for kind in AGENTS}
"""Every registered agent by name: the built-in :data:`AGENTS`, then those :func:`register_agent` adds."""


def register_agent(kind: Any, source: str) -> None:
    """Add ``kind`` (an :class:`AgentKind`; ``source`` names where it came from in errors) to
    :data:`AGENT_KINDS`; registering an equal kind again does nothing."""
    if not isinstance(kind, AgentKind):
        raise ConfigError(f"{source}: {kind!r} is not an online agent's registration (an AgentKind, see "
                          "slate_rl.online.config.AgentKind)")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", kind.name) or kind.name.endswith(CORRECTED_SUFFIX):
        raise ConfigError(f"{source}: agent name {kind.name!r} must be lower-case letters, digits and '_', not "
                          f"ending in {CORRECTED_SUFFIX!r}")
    known = AGENT_KINDS.get(kind.name)
    if known is not None and known != kind:
        raise ConfigError(f"{source}: agent name {kind.name!r} is taken (builder {known.build}); give the agent "
                          "another name")
    if not (isinstance(kind.config, type) and is_dataclass(kind.config)
            and isinstance(getattr(kind.config, "SECTION", None), str)):
        raise ConfigError(f"{source}: agent {kind.name}: config must be a dataclass with SECTION = '<section>'")
    unknown = [n for n in kind.needs if n not in NEEDS]
    if unknown:
        raise ConfigError(f"{source}: agent {kind.name}: unknown need {unknown[0]!r}; choose from {', '.join(NEEDS)}")
    AGENT_KINDS[kind.name] = kind


def agent_names() -> tuple[str, ...]:
    """The registered agents' names (config.yaml's ``agents.names``), in table order."""
    return tuple(AGENT_KINDS)


def agent_display_names() -> dict[str, str]:
    """Each registered agent's name in tables and plots."""
    return {name: kind.display for name, kind in AGENT_KINDS.items()}


def variant_agents() -> tuple[str, ...]:
    """The registered agents with a ``published`` and a ``corrected`` variant."""
    return tuple(name for name, kind in AGENT_KINDS.items() if kind.variants)


def agent_configs() -> dict[str, type]:
    """The config class of each registered agent's section, by section name (``sac``, ``reinforce``...)."""
    out: dict[str, type] = {}
    for kind in AGENT_KINDS.values():
        section = kind.config.SECTION  # type: ignore[attr-defined]
        if out.setdefault(section, kind.config) is not kind.config:
            raise ConfigError(f"agent {kind.name}: section {section!r} is already {out[section].__name__}'s; give "
                              f"{kind.config.__name__} another SECTION")
    return out


def agent_option_prefix(section: str) -> str:
    """The prefix of ``train-agent``'s options of an agent config section: none for ``sac``, ``<section>_``
    otherwise (``--slateq-epsilon``)."""
    return "" if section == "sac" else f"{section}_"


def needs_gems(name: str) -> bool:
    """Whether registered agent ``name`` acts through a GeMS checkpoint (its tags then name the checkpoint)."""
    return "gems" in AGENT_KINDS[name].needs


def agent_tag_wildcard() -> str:
    """The regular expression of every registered agent's tags (the ``{agent_tag}`` wildcard)."""
    def pattern(kind: AgentKind) -> str:
        if needs_gems(kind.name):
            return f"{kind.name}_{GEMS_TAG_WILDCARD}"
        return f"{kind.name}(?:{CORRECTED_SUFFIX})?" if kind.variants else kind.name
    return "|".join(pattern(kind) for kind in AGENT_KINDS.values())


def parse_agent_tag(tag: str) -> tuple[str, str | None]:
    """``<name>_<gems_tag>`` -> (name, gems_tag) for an agent that needs GeMS; ``<name>_corrected`` -> (name,
    None); ``<name>`` -> (name, None). The variant is :func:`agent_variant`; an unknown tag is one ConfigError."""
    for kind in AGENT_KINDS.values():
        if needs_gems(kind.name):
            prefix = kind.name + "_"
            if tag.startswith(prefix) and re.fullmatch(GEMS_TAG_WILDCARD, tag[len(prefix):]):
                return kind.name, tag[len(prefix):]
        elif tag == kind.name or kind.variants and tag == kind.name + CORRECTED_SUFFIX:
            return kind.name, None
    gems = [name for name in AGENT_KINDS if needs_gems(name)]
    plain = [name for name in AGENT_KINDS if not needs_gems(name)]
    raise ConfigError(
        f"unknown agent {tag!r}; choose "
        + "".join(f"{g}_<gems tag> (e.g. {g}_d32_beta1_lc0.5_scratch_s58407201), " for g in gems)
        + f"{', '.join(plain)} ({', '.join(variant_agents())} with an optional {CORRECTED_SUFFIX!r} suffix for the "
        "corrected variant)")


def agent_kind(tag: str) -> AgentKind:
    """The registration of the agent ``tag`` names."""
    return AGENT_KINDS[parse_agent_tag(tag)[0]]


def agent_section(tag: str) -> str:
    """The config section of agent ``tag`` (its kind's config class's): a job and its resume fingerprint carry
    their agent's section only."""
    return str(agent_kind(tag).config.SECTION)  # type: ignore[attr-defined]


def agent_variant(tag: str) -> Variant:
    """``published`` or ``corrected`` (the tag's suffix); ``published`` for agents without variants."""
    kind = agent_kind(tag)
    return "corrected" if kind.variants and tag.endswith(CORRECTED_SUFFIX) else "published"


def variant_tag(name: str, variant: str, gems: str | None = None) -> str:
    """The tag of agent ``name`` in ``variant`` (over GeMS checkpoint ``gems`` for an agent that needs one);
    inverse of :func:`parse_agent_tag` + :func:`agent_variant`."""
    if variant not in VARIANTS:
        raise ConfigError(f"agent variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    kind = AGENT_KINDS.get(name)
    if kind is None:
        raise ConfigError(f"unknown agent {name!r}; registered agents: {', '.join(AGENT_KINDS)}")
    if variant == "corrected" and not kind.variants:
        raise ConfigError(f"agent {name} has no corrected variant; only {', '.join(variant_agents())} have")
    if needs_gems(name):
        if gems is None:
            raise ConfigError(f"agent {name} needs a GeMS tag")
        return f"{name}_{gems}"
    return name + CORRECTED_SUFFIX if variant == "corrected" else name
