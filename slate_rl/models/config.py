"""Settings of the item-table and slate models (config.yaml's ``mf`` and ``gems`` sections).

Torch-free, so that the workflow validates config.yaml without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from slate_rl.core import artifacts
from slate_rl.core.config import Variant, check_fields, replace
from slate_rl.core.errors import ConfigError

ItemTableMode = Literal["scratch", "mf_fixed", "ideal"]
SampleScale = Literal["variance", "std"]


@dataclass(frozen=True)
class MFConfig:
    """BPR-MF training (config.yaml's ``mf`` section); paper values by default."""

    SECTION: ClassVar[str] = "mf"
    """The config.yaml section (and the prefix of every key in its errors)."""

    dim: int = 20
    """Embedding dimension."""
    batch_size: int = 256
    """(user, positive, negative) triples per step."""
    lr: float = 1e-4
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    max_epochs: int = 100
    """Upper bound on epochs (early stopping usually ends sooner)."""
    patience: int = 3
    """Early-stopping patience on the validation loss, in epochs."""
    val_fraction: float = 0.1
    """Share of sessions (the first ones) whose second half is held out."""
    seed: int = 0
    """Seed of initialisation, shuffling and negatives."""
    variant: Variant = "published"
    """Validation split: published (held-out sessions scored with training users' vectors, as the published code)
    or corrected (the second half of held-out sessions, their own user vectors)."""

    def __post_init__(self) -> None:
        check_fields(self)
        sec = self.SECTION
        for name in ("dim", "batch_size", "max_epochs", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{sec}.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"{sec}.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise ConfigError(f"{sec}.lr must be > 0, got {self.lr}")


@dataclass(frozen=True)
class GeMSConfig:
    """GeMS pre-training (config.yaml's ``gems`` section); paper values by default."""

    SECTION: ClassVar[str] = "gems"
    """The config.yaml section (and the prefix of every key in its errors)."""

    latent_dim: int = 32
    """Latent (action) dimension d."""
    beta: float = 1.0
    """Weight of the KL term (KL averaged over latent dimensions)."""
    lambda_click: float = 0.5
    """Weight of the click BCE term."""
    item_table: ItemTableMode = "scratch"
    """Item table: learned from scratch, MF embeddings frozen (mf_fixed), or the simulator's (ideal)."""
    epochs: int = 10
    """Training epochs over every (slate, clicks) of the logs."""
    batch_size: int = 256
    """Examples per gradient step."""
    lr: float = 1e-3
    """Adam learning rate."""
    seed: int = 58407201
    """Seed of initialisation, shuffling and sampling."""
    val_fraction: float = 0.1
    """Share of sessions (the first ones) used for validation."""
    bounds_sessions: int = 1000
    """Sessions (the first ones) whose encodings define the action bounds."""
    sample_scale: SampleScale = "variance"
    """Scale of the training sample z = mu + eps * scale: the variance (published, the paper's beta) or the
    standard deviation (``std``, tag suffix ``_std``)."""
    shuffle: bool = False
    """Reshuffle the training slates every epoch (seeded by ``seed``); off: the published order, every epoch
    the sessions in turn and each session's slates in step order (its DataLoader's default)."""

    def __post_init__(self) -> None:
        check_fields(self)
        sec = self.SECTION
        for name in ("latent_dim", "epochs", "batch_size", "bounds_sessions"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{sec}.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"{sec}.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.beta < 0 or self.lambda_click < 0 or self.lr <= 0:
            raise ConfigError(f"{sec}.beta and {sec}.lambda_click must be >= 0 and "
                              f"{sec}.lr > 0")
        if self.sample_scale not in ("variance", "std"):
            raise ConfigError(f"{sec}.sample_scale must be 'variance' or 'std', got {self.sample_scale!r}")

    @property
    def tag(self) -> str:
        """Deterministic artifact name: latent dim, beta, lambda_click, item table, seed (+ ``_std``)."""
        return artifacts.gems_tag(self.latent_dim, self.beta, self.lambda_click, self.item_table, self.seed,
                                  self.sample_scale)


def gems_config_from_tag(tag: str, base: GeMSConfig | None = None) -> GeMSConfig:
    """Inverse of :attr:`GeMSConfig.tag`: the tag's fields over ``base`` (for the other fields)."""
    return replace(base or GeMSConfig(), **artifacts.parse_gems_tag(tag))
