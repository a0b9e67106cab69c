"""TopicRec parameters and the six environment presets of the GeMS paper.

Defaults are the values the paper's experiments ran with (``docs/topicrec.md``),
not the published argparse defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, ClassVar, Literal, Protocol

from slate_rl.core.artifacts import REFERENCE_POLICIES, TEST_SEED, TEST_SESSIONS
from slate_rl.core.config import check_fields, from_dict, resolve_object, to_dict
from slate_rl.core.errors import ConfigError

MAX_ITEMS = 32767
"""The largest catalogue: item ids are stored as int16 in the logs."""


class SimulatorConfig(Protocol):
    """The fields of an environment's config the pipeline reads (any frozen dataclass that has them; see
    :mod:`slate_rl.sim.protocol`)."""

    SIMULATOR: ClassVar[str]
    """``"module:Class"`` of the simulator this config configures."""

    @property
    def num_items(self) -> int:
        """Catalogue size (item ids ``0 .. num_items - 1``, at most :data:`MAX_ITEMS`)."""
        ...

    @property
    def slate_size(self) -> int:
        """Items per slate (k)."""
        ...

    @property
    def episode_length(self) -> int:
        """Steps per session; ``step`` sets ``truncated`` when it is reached."""
        ...

    @property
    def embeddings(self) -> str:
        """The item-table kind the environment uses (``focused`` or ``diffuse``)."""
        ...

    @property
    def num_topics(self) -> int:
        """Topics of the item table."""
        ...

    @property
    def topic_size(self) -> int:
        """Dimensions per topic of the item table."""
        ...

    @property
    def embedding_dim(self) -> int:
        """Width of the item table (``num_topics * topic_size``)."""
        ...


@dataclass(frozen=True)
class TopicRecConfig:
    """Dynamics of one TopicRec environment."""

    SIMULATOR: ClassVar[str] = "slate_rl.sim.core:TopicRec"
    """The simulator this config configures (:func:`slate_rl.sim.protocol.make_simulator`)."""

    embeddings: Literal["focused", "diffuse"] = "focused"
    """Which item-embedding table the environment uses."""
    click_model: Literal["topdown", "mix"] = "topdown"
    """Examination model: tdPBM (0.85^r) or mixPBM (average of top-down and bottom-up)."""
    diversity_penalty: float = 1.0
    """Attractiveness divisor for slates with >= diversity_threshold items of one main topic."""
    num_items: int = 1000
    """Catalogue size."""
    slate_size: int = 10
    """Items per recommendation (k)."""
    num_topics: int = 10
    """Number of topics."""
    topic_size: int = 2
    """Embedding dimensions per topic (embeddings are num_topics * topic_size wide)."""
    episode_length: int = 100
    """Rewarded steps per session (H); the episode is truncated when t reaches it."""
    offset: float = 0.28
    """Score at which relevance is 0.5."""
    slope: float = 100.0
    """Steepness of the relevance sigmoid."""
    omega: float = 0.9
    """Preference drift factor: u <- omega * u + (1 - omega) * e_clicked."""
    boredom_threshold: int = 5
    """Clicks on one topic in the recent window that make the user bored of it."""
    boredom_window: int = 5
    """Steps a click stays in the recent-click window (clicks of steps t-5..t remain after step t)."""
    recent_clicks_maxlen: int = 10
    """At most this many recent clicks are remembered."""
    boredom_duration: int = 5
    """Steps a bored topic stays bored."""
    short_term_boost: float = 1.0
    """Multiplier of the short-term topic's block in the effective user vector."""
    diversity_threshold: int = 4
    """A slate with at least this many items of one main topic is penalised."""
    position_decay: float = 0.85
    """Base of the examination probability per rank."""
    boredom_bookkeeping: Literal["published", "corrected"] = "published"
    """Recent-click bookkeeping: ``published`` keeps the published simulator's two bounded lists (topics and
    steps; reset clicks enter only the topic list, forgetting pops both fronts), ``corrected`` one aligned
    list in which reset clicks are stamped with step 0 (spec, "reset()")."""

    def __post_init__(self) -> None:
        check_fields(self, prefix="environment")
        positive = (
            "num_items", "slate_size", "num_topics", "topic_size", "episode_length",
            "boredom_threshold", "boredom_window", "recent_clicks_maxlen", "boredom_duration",
            "diversity_threshold",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"TopicRec parameter {name!r} must be >= 1, got {getattr(self, name)}")
        if self.slate_size > self.num_items:
            raise ConfigError(f"slate_size ({self.slate_size}) cannot exceed num_items ({self.num_items})")
        if self.diversity_penalty <= 0:
            raise ConfigError(f"diversity_penalty must be > 0, got {self.diversity_penalty}")
        if not 0.0 <= self.omega <= 1.0:
            raise ConfigError(f"omega must be in [0, 1], got {self.omega}")
        if not 0.0 < self.position_decay <= 1.0:
            raise ConfigError(f"position_decay must be in (0, 1], got {self.position_decay}")
        if self.boredom_bookkeeping not in ("published", "corrected"):
            raise ConfigError(
                f"boredom_bookkeeping must be 'published' or 'corrected', got {self.boredom_bookkeeping!r}"
            )
        if self.num_items > MAX_ITEMS:
            raise ConfigError(f"num_items ({self.num_items}) must fit the int16 item ids of the logs (<= {MAX_ITEMS})")

    @property
    def embedding_dim(self) -> int:
        return self.num_topics * self.topic_size


PRESETS: dict[str, dict[str, Any]] = {
    "focused_topdown": {"embeddings": "focused", "click_model": "topdown", "diversity_penalty": 1.0},
    "focused_mix": {"embeddings": "focused", "click_model": "mix", "diversity_penalty": 1.0},
    "focused_divpen": {"embeddings": "focused", "click_model": "mix", "diversity_penalty": 3.0},
    "diffuse_topdown": {"embeddings": "diffuse", "click_model": "topdown", "diversity_penalty": 1.0},
    "diffuse_mix": {"embeddings": "diffuse", "click_model": "mix", "diversity_penalty": 1.0},
    "diffuse_divpen": {"embeddings": "diffuse", "click_model": "mix", "diversity_penalty": 3.0},
}


def make_env_config(
    name: str, user_defined: Mapping[str, Mapping[str, Any]] | None = None, **overrides: Any
) -> SimulatorConfig:
    """Resolve an environment name to its config.

    ``name`` is a preset or a key of ``user_defined`` (the ``environments`` section of
    config.yaml). A user-defined entry may name a preset under ``base`` and override any
    :class:`TopicRecConfig` field, or name another simulator's config dataclass under ``simulator``
    (``"module:Class"``, see :mod:`slate_rl.sim.protocol`) and set its fields.
    """
    user_defined = user_defined or {}
    cls: Any = TopicRecConfig
    if name in user_defined:
        spec = dict(user_defined[name])
        base_name = spec.pop("base", None)
        simulator = spec.pop("simulator", None)
        if simulator is not None:
            if base_name is not None:
                raise ConfigError(f"environment {name!r}: 'base' names a TopicRec preset and 'simulator' another "
                                  "simulator; give one of them")
            cls = simulator_config_class(simulator, f"environments.{name}.simulator")
        if base_name is not None and base_name not in PRESETS:
            raise ConfigError(
                f"environment {name!r}: base {base_name!r} is not a preset; choose one of {', '.join(PRESETS)}"
            )
        params = {**(PRESETS[base_name] if base_name else {}), **spec}
    elif name in PRESETS:
        params = dict(PRESETS[name])
    else:
        known = list(PRESETS) + list(user_defined)
        raise ConfigError(f"unknown environment {name!r}; choose one of {', '.join(known)} or define it in config.yaml")
    params.update(overrides)
    config: SimulatorConfig = from_dict(cls, params, prefix=f"environments.{name}")
    return config


def simulator_config_class(spec: str, key: str) -> type:
    """The config dataclass ``spec`` (``"module:Class"``) names, checked to be one (config key ``key``)."""
    if not isinstance(spec, str):
        raise ConfigError(f"{key} must be a string 'module:Class', got {spec!r}")
    cls = resolve_object(spec, key)
    if not (isinstance(cls, type) and is_dataclass(cls) and isinstance(getattr(cls, "SIMULATOR", None), str)):
        raise ConfigError(f"{key}: {spec} is not a simulator config (a dataclass with a class variable "
                          "SIMULATOR = 'module:Class')")
    missing = [f for f in SIMULATOR_FIELDS if not hasattr(cls, f) and f not in {g.name for g in fields(cls)}]
    if missing:
        raise ConfigError(f"{key}: {spec} lacks the fields the pipeline reads: {', '.join(missing)}")
    return cls


def env_record(config: SimulatorConfig) -> dict[str, Any]:
    """Every parameter of environment ``config`` as artifacts record it (``env_config``): its fields, and for a
    simulator other than TopicRec the config class under ``simulator`` (so :func:`make_env_config` and
    ``make_simulator`` rebuild the same environment from the record)."""
    record = to_dict(config)
    if type(config) is not TopicRecConfig:
        record["simulator"] = f"{type(config).__module__}:{type(config).__qualname__}"
    return record


SIMULATOR_FIELDS = tuple(name for name, value in vars(SimulatorConfig).items() if isinstance(value, property))
"""The attributes of :class:`SimulatorConfig` (its properties), checked on a simulator's config class."""


@dataclass(frozen=True)
class LogsConfig:
    """Size and randomness of the logged data (config.yaml's ``logs`` section)."""

    SECTION: ClassVar[str] = "logs"
    """The config.yaml section (and the prefix of every key in its errors)."""

    sessions: int = 100_000
    """Number of logged sessions (users) per environment."""
    epsilon: float = 0.5
    """Probability that a slot shows a random item instead of the oracle's."""
    seed: int = 2754851
    """Seed of the logged users and of the policy's random choices."""
    batch_size: int = 8192
    """Users simulated in parallel."""

    def __post_init__(self) -> None:
        check_fields(self)
        sec = self.SECTION
        if self.sessions < 1:
            raise ConfigError(f"{sec}.sessions must be >= 1, got {self.sessions}")
        if self.batch_size < 1:
            raise ConfigError(f"{sec}.batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"{sec}.epsilon must be in [0, 1], got {self.epsilon}")


@dataclass(frozen=True)
class EvaluationConfig:
    """The fixed test users of every evaluation and the reference policies (config.yaml's ``evaluation``)."""

    SECTION: ClassVar[str] = "evaluation"
    """The config.yaml section (and the prefix of every key in its errors)."""

    test_seed: int = TEST_SEED
    """Seed of the test users; identical for every agent and algorithm."""
    test_sessions: int = TEST_SESSIONS
    """Sessions (users) of the test evaluation."""
    reference_policies: list[str] = field(default_factory=lambda: list(REFERENCE_POLICIES))
    """Reference policies evaluated per environment."""
    epsilon: float = 0.5
    """Epsilon of the eps-greedy reference policy."""

    def __post_init__(self) -> None:
        check_fields(self)
        sec = self.SECTION
        if self.test_sessions < 1:
            raise ConfigError(f"{sec}.test_sessions must be >= 1, got {self.test_sessions}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"{sec}.epsilon must be in [0, 1], got {self.epsilon}")
        unknown = [p for p in self.reference_policies if p not in REFERENCE_POLICIES]
        if unknown:
            raise ConfigError(f"{sec}.reference_policies: unknown policy {unknown[0]!r}; choose among "
                              f"{', '.join(REFERENCE_POLICIES)}")
