"""The facts of the pipeline's artifacts, written once: names, tag grammars, paths, evaluation constants.

The Snakefile, :mod:`slate_rl.pipeline`, the stages and the report read these; nothing else
spells a GeMS tag, a dataset quality or an artifact path. The names and tags of agents and offline
methods derive from their registrations (:mod:`slate_rl.online.config`, :mod:`slate_rl.offline.config`).
This module imports the standard library only, so that ``snakemake -n`` never imports torch.

GeMS tags: ``d<latent_dim>_beta<beta>_lc<lambda_click>_<item_table>_s<seed>[_std]``.
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Literal

from slate_rl.core.errors import ConfigError

# ---------------------------------------------------------------------------------------------- GeMS tags
GEMS_ITEM_TABLES = ("scratch", "mf_fixed", "ideal")
"""Item tables of GeMS: learned from scratch, MF embeddings frozen, the simulator's (ideal)."""
GEMS_TAG_PATTERN = (
    r"d(?P<latent_dim>\d+)_beta(?P<beta>[0-9.e+-]+)_lc(?P<lambda_click>[0-9.e+-]+)"
    rf"_(?P<item_table>{'|'.join(GEMS_ITEM_TABLES)})_s(?P<seed>\d+)(?P<std>_std)?"
)
GEMS_TAG_WILDCARD = re.sub(r"\(\?P<\w+>", "(?:", GEMS_TAG_PATTERN)
"""The same pattern without named groups (a Snakemake wildcard constraint)."""


def gems_tag(latent_dim: int, beta: float, lambda_click: float, item_table: str, seed: int,
             sample_scale: str = "variance") -> str:
    """The deterministic name of a GeMS checkpoint; inverse of :func:`parse_gems_tag`."""
    suffix = "_std" if sample_scale == "std" else ""
    return f"d{latent_dim}_beta{beta:g}_lc{lambda_click:g}_{item_table}_s{seed}{suffix}"


def parse_gems_tag(tag: str) -> dict[str, Any]:
    """The GeMS settings a tag names (latent_dim, beta, lambda_click, item_table, seed, sample_scale)."""
    m = re.fullmatch(GEMS_TAG_PATTERN, tag)
    if m is None:
        raise ConfigError(f"{tag!r} is not a GeMS tag like d32_beta1_lc0.5_scratch_s58407201")
    g = m.groupdict()
    return {"latent_dim": int(g["latent_dim"]), "beta": float(g["beta"]), "lambda_click": float(g["lambda_click"]),
            "item_table": g["item_table"], "seed": int(g["seed"]), "sample_scale": "std" if g["std"] else "variance"}


# --------------------------------------------------------------------------------------------- agent variants
Variant = Literal["published", "corrected"]
VARIANTS: tuple[Variant, ...] = ("published", "corrected")
"""The variants of a baseline whose published code has bugs: the published code's behaviour, and the corrected
one. The agents and their tag grammar are the registered agents' (:mod:`slate_rl.online.config`)."""


# ------------------------------------------------------------------- datasets, algorithms, reference policies
QUALITIES = ("expert", "medium", "random", "replay", "logged", "step_mix", "noise_sweep")
"""The base dataset qualities (others are mixtures of these): four collected with the behaviour agent;
``logged``, the logged epsilon-greedy sessions (data/logs/{env}.npz) in the agent's state and action spaces; and
two where the behaviour's quality varies from session to session at the same states, so that a
return-conditioned method has something to condition on: ``step_mix`` (each step the expert's action with a
per-session probability, else the medium or random behaviour's) and ``noise_sweep`` (the expert at one of
several noise levels per session)."""
RESERVED_QUALITIES = {"online": "results/{env}/online/ holds the online agents' results",
                      "reference": "results/{env}/reference/ holds the reference policies' results",
                      "references": "data/offline/{env}/references.json holds the offline reference policies"}
"""Names a dataset quality (a mixture's name) cannot take: folders under results/{env}/, files under
data/offline/{env}/."""
QUALITY_WILDCARD = rf"(?!(?:{'|'.join(RESERVED_QUALITIES)})\b)[A-Za-z0-9_]+"
REFERENCE_POLICIES = ("random", "oracle", "eps-greedy")
"""The simulator's reference policies (:mod:`slate_rl.sim.policies`)."""
EMBEDDING_KINDS = ("focused", "diffuse")

# ---------------------------------------------------------------------------------------------- evaluation
TEST_SEED = 58517
"""Seed of the fixed test users of every online and offline evaluation."""
TEST_SESSIONS = 500
"""Test users per evaluation."""


def evaluation_args(seed: int = TEST_SEED, sessions: int = TEST_SESSIONS) -> str:
    """The command-line options naming the test users (the stages' ``--test-seed``/``--test-sessions``)."""
    return f"--test-seed {shlex.quote(str(seed))} --test-sessions {shlex.quote(str(sessions))}"


# --------------------------------------------------------------------------------------------- path templates
# Templates name their fields like the Snakemake wildcards, so that rules use them as they are and code
# fills them with :func:`path`.
EMBEDDINGS = "data/embeddings/{kind}.npy"
LOGS = "data/logs/{env}.npz"
MF = "data/mf/{env}.npy"
MF_METRICS = "data/mf/{env}.json"
GEMS = "data/gems/{env}/{gems_tag}.ckpt"
GEMS_METRICS = "data/gems/{env}/{gems_tag}.json"
AGENT_DIR = "data/agents/{env}/{agent_tag}/seed{seed}"
AGENT_CHECKPOINTS = ("best", "medium", "last")
"""Checkpoints of an agent run: best validation (expert, state encoder), medium (the medium behaviour), last (the
final training state, with the replay buffer of the ``replay`` quality)."""
DATASET = "data/offline/{env}/{quality}.npz"
DATASET_META = "data/offline/{env}/{quality}.json"
OFFLINE_REFERENCES = "data/offline/{env}/references.json"
POLICY = "data/policies/{env}/{quality}/{algo}/seed{seed}.pt"
ONLINE_RESULT = "results/{env}/online/{agent_tag}/seed{seed}.json"
OFFLINE_RESULT = "results/{env}/{quality}/{algo}/seed{seed}.json"
AGGREGATE_RESULT = "results/{env}/{algo}.json"
REFERENCE_RESULT = "results/{env}/reference/{policy}.json"
REPORT = "results/report.md"
REPORT_DIR = "results/report"
RESERVED_ENV_NAMES = ("report",)
"""Names an environment cannot take: its results/{env}/ folder would be the report's (``REPORT_DIR``)."""


def agent_checkpoint(which: str, template: str = AGENT_DIR) -> str:
    """``<agent dir>/<which>.ckpt`` for ``which`` in :data:`AGENT_CHECKPOINTS` (a template, or a filled path)."""
    if which not in AGENT_CHECKPOINTS:
        raise ConfigError(f"unknown agent checkpoint {which!r}; one of {', '.join(AGENT_CHECKPOINTS)}")
    return f"{template}/{which}.ckpt"


def path(template: str, **fields: Any) -> str:
    """``template`` with its fields filled in, e.g. ``path(GEMS, env="focused_topdown", gems_tag=tag)``."""
    try:
        return template.format(**fields)
    except KeyError as exc:
        raise ConfigError(f"path {template!r} needs the field {exc.args[0]!r}") from None


def check_environment(path: Any, meta: dict[str, Any], env: str, env_config: dict[str, Any] | None = None,
                      what: str = "checkpoint") -> None:
    """Refuse an input made for another environment: its recorded ``env`` (and each ``env_config`` parameter it
    records) must be the run's; one :class:`ArtifactError` naming both. Files that record neither pass."""
    from slate_rl.core.errors import ArtifactError

    recorded = meta.get("env")
    if recorded is not None and recorded != env:
        raise ArtifactError(f"{path}: this {what} was made for environment {recorded!r}, but the run is for {env!r} "
                            f"(--env): give the {what} built for {env!r}, or run for {recorded!r}")
    stored = meta.get("env_config")
    if env_config and isinstance(stored, dict):
        for key, value in env_config.items():
            if key in stored and stored[key] != value:
                raise ArtifactError(f"{path}: this {what} was made with env_config.{key} = {stored[key]!r}, but "
                                    f"environment {env!r} has {value!r}: rebuild it for this environment")
