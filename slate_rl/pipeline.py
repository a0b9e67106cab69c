"""Helpers for the Snakemake workflow: config validation and per-rule parameters.

This module sits at the top of the layers (beside ``stages``): the Snakefile imports it to
validate ``config`` once at parse time and to turn config entries into rule parameters. It
imports torch-free modules only (artifact facts, config dataclasses), so that parsing the
Snakefile never imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from slate_rl.core.artifacts import QUALITIES, RESERVED_ENV_NAMES
from slate_rl.core.config import from_dict, import_module, load_yaml, to_dict, validate_schema
from slate_rl.core.errors import ConfigError
from slate_rl.models.config import GeMSConfig, MFConfig, gems_config_from_tag
from slate_rl.offline.config import ALGO_CONFIGS, OfflineConfig, OfflineDataConfig, offline_algos, register_method
from slate_rl.online.config import (
    AgentBuildConfig,
    OnlineConfig,
    agent_configs,
    agent_names,
    agent_option_prefix,
    agent_section,
    needs_gems,
    register_agent,
    variant_agents,
    variant_tag,
)
from slate_rl.sim.config import PRESETS, EvaluationConfig, LogsConfig, SimulatorConfig, make_env_config

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"
PLUGINS_ENV = "SLATE_RL_PLUGINS"
"""The environment variable naming the plugin modules (comma-separated) every ``slate-rl`` command loads; the
workflow sets it from config.yaml's ``plugins``."""


def load_plugins(modules: Iterable[str]) -> None:
    """Import each plugin module and register what it defines: the offline methods of its ``OFFLINE_METHODS`` (config
    classes, :func:`~slate_rl.offline.config.register_method`) and the online agents of its ``ONLINE_AGENTS``
    (:class:`~slate_rl.online.config.AgentKind` objects, :func:`~slate_rl.online.config.register_agent`); see README,
    "Adding a method, an agent or an environment"."""
    for module_name in modules:
        if not module_name:
            continue
        module = import_module(module_name, "plugins")
        found = {key: getattr(module, key, None) for key in ("OFFLINE_METHODS", "ONLINE_AGENTS")}
        if not any(isinstance(v, list | tuple) and v for v in found.values()):
            raise ConfigError(f"plugin {module_name!r} defines no OFFLINE_METHODS (a tuple of method config classes) "
                              "and no ONLINE_AGENTS (a tuple of AgentKinds)")
        for cls in found["OFFLINE_METHODS"] or ():
            register_method(cls, f"plugin {module_name}")
        for kind in found["ONLINE_AGENTS"] or ():
            register_agent(kind, f"plugin {module_name}")


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """The config schema: the YAML file, with what the registrations say generated: each offline method's section
    and its name in ``offline.algos`` (:data:`slate_rl.offline.config.ALGO_CONFIGS`), each agent's name in
    ``agents.names``, its ``agents.variants`` key when it has variants, and each agent config section
    (:data:`slate_rl.online.config.AGENT_KINDS`). A generated section is optional: without it, its class's defaults
    hold."""
    schema: dict[str, Any] = yaml.safe_load(Path(path).read_text())
    props = schema["properties"]
    props["offline"]["properties"]["algos"]["items"]["enum"] = list(offline_algos())
    props["agents"]["properties"]["names"]["items"]["enum"] = list(agent_names())
    props["agents"]["properties"]["variants"]["properties"] = {name: {"$ref": "#/$defs/variant"}
                                                               for name in variant_agents()}
    for name, cls in registered_sections().items():
        props[name] = method_schema(cls)
    return schema


def _type_schema(tp: Any, where: str) -> dict[str, Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    simple = {int: "integer", float: "number", bool: "boolean", str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    if origin is typing.Literal:
        return {"type": "string", "enum": list(args)}
    if origin in (types.UnionType, typing.Union) and type(None) in args and len(args) == 2:
        inner = _type_schema(next(a for a in args if a is not type(None)), where)
        return {**inner, "type": [inner["type"], "null"]}
    if origin in (list, tuple):
        return {"type": "array", "items": _type_schema(args[0], where)}
    raise ConfigError(f"{where}: no schema for the type {tp!r}; give the field a plain type")


def method_schema(cls: type) -> dict[str, Any]:
    """The schema section of a config class (an offline method's, an agent's): its fields' types (ranges are the class's
    ``__post_init__``'s, checked by :func:`validate_config`)."""
    hints = typing.get_type_hints(cls)
    doc = (cls.__doc__ or cls.__name__).strip().splitlines()[0]
    return {"type": "object", "additionalProperties": False,
            "description": f"{doc} (range checks: {cls.__module__}.{cls.__name__})",
            "properties": {f.name: _type_schema(hints[f.name], f"{cls.__name__}.{f.name}")
                           for f in dataclasses.fields(cls)}}


def _coerce(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> Any:
    """Turn strings into numbers/booleans where the schema wants them.

    ``snakemake --config 'logs={"sessions": 10}'`` hands nested values over as strings; they
    are parsed as YAML scalars so that the override means what the user typed.
    """
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    if "if" in schema and isinstance(value, dict):  # the branch whose required keys are present
        branch = "then" if all(k in value for k in schema["if"].get("required", ())) else "else"
        return _coerce(value, schema.get(branch, {}), root)
    kind = schema.get("type")
    if isinstance(value, str) and kind in ("integer", "number", "boolean"):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {
            k: _coerce(v, props[k] if k in props else extra if isinstance(extra, dict) else {}, root)
            for k, v in value.items()
        }
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_coerce(v, schema["items"], root) for v in value]
    return value


SECTIONS: dict[str, tuple[type, tuple[str, ...]]] = {
    "logs": (LogsConfig, ()),
    "evaluation": (EvaluationConfig, ()),
    "mf": (MFConfig, ()),
    "gems": (GeMSConfig, ()),
    "agents": (AgentBuildConfig, ("names", "seeds", "variants")),
    "online": (OnlineConfig, ("seeds_per_job",)),
    "offline_data": (OfflineDataConfig, ()),
    "offline": (OfflineConfig, ("algos", "seeds", "quality", "qualities", "seeds_per_job")),
}
"""Each config.yaml section with settings other than the agents' and the offline methods' (:func:`sections` adds
them): its
dataclass, and the keys only the workflow reads (which jobs to
plan: names, seeds, qualities, seeds per job). The dataclass's fields plus those keys are the schema's properties of
the section (tests/test_workflow.py checks it); the rules pass a section's fields to the stages, never these keys
(:func:`section_args`)."""


YTE_KEY = "__use_yte__"
"""The top-level key that makes Snakemake load a config file as a YTE template, i.e. run the Python in it."""


def refuse_templated_configs(paths: list[str] | list[Path]) -> None:
    """One ConfigError for a config file that sets ``__use_yte__``. Snakemake removes the key from ``config``
    once it has rendered the template (whose code has run by then, before the Snakefile), so the check reads
    the files themselves: the workflow builds nothing from a templated config."""
    for path in paths:
        if YTE_KEY in load_yaml(path):
            raise ConfigError(f"config file {path} sets {YTE_KEY!r}, so Snakemake ran it as a YTE template (Python "
                              "code) while loading it; slate_rl's configs are plain YAML: remove the key, and check "
                              "that file, which ran on this machine")


def validate_config(config: dict[str, Any], schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """Schema validation plus the checks a schema cannot express; raises one ConfigError.

    Returns the config with command-line strings coerced to the types the schema asks for. The ``plugins``
    modules are loaded first (their offline methods then have their sections in the schema).
    """
    plugins = config.get("plugins") or []
    if not (isinstance(plugins, list) and all(isinstance(m, str) for m in plugins)):
        raise ConfigError(f"config: key 'plugins' must be a list of module names, e.g. [my_package.methods]; got "
                          f"{plugins!r}")
    load_plugins(plugins)
    schema = load_schema(schema_path)
    config = _coerce(config, schema, schema)
    validate_schema(config, schema)
    defined = config.get("environments", {})
    clash = sorted(set(defined) & set(PRESETS))
    if clash:
        raise ConfigError(f"config: key 'environments.{clash[0]}' redefines a preset; give it another name")
    taken = sorted(set(defined) & set(RESERVED_ENV_NAMES))
    if taken:
        raise ConfigError(f"config: key 'environments.{taken[0]}': the name is taken (results/{taken[0]}/ holds "
                          "the report); give the environment another name")
    for i, name in enumerate(config["envs"]):
        if name not in PRESETS and name not in defined:
            raise ConfigError(
                f"config: key 'envs[{i}]': unknown environment {name!r}; use a preset "
                f"({', '.join(PRESETS)}) or define it under 'environments'"
            )
    for name in defined:
        make_env_config(name, defined)  # type checks of every user-defined environment
    for section, (cls, workflow_keys) in sections().items():  # the one validator of every section's values
        values = {k: v for k, v in (config.get(section) or {}).items() if k not in workflow_keys}
        try:
            from_dict(cls, values, section)
        except ConfigError as exc:  # range checks name '<section>.<key>'; type checks already say 'config key'
            message = str(exc)
            raise ConfigError(message if message.startswith(("config", "unknown")) else f"config: {message}"
                              ) from None
    for section in ("online", "offline"):
        seeds_per_job(config, section)
    known = {*QUALITIES, *config["offline_data"]["mixtures"]}
    keys = [("offline.quality", config["offline"]["quality"])]
    for section in ("offline_data", "offline"):
        keys += [(f"{section}.qualities[{i}]", q) for i, q in enumerate(config[section]["qualities"])]
    for key, value in keys:
        if value not in known:
            raise ConfigError(f"config: key {key!r}: unknown dataset quality {value!r}; use {', '.join(QUALITIES)} "
                              "or a mixture defined under 'offline_data.mixtures'")
    return config


def method_priority(algo: str) -> int:
    """The scheduling priority of offline method ``algo``'s training jobs (its registration's)."""
    return int(ALGO_CONFIGS[algo].METHOD.priority)


def env_config(config: dict[str, Any], env: str) -> SimulatorConfig:
    return make_env_config(env, config.get("environments", {}))


def env_spec_arg(config: dict[str, Any], env: str) -> str:
    """``--env-spec '<json>'`` for a user-defined environment, '' for a preset."""
    spec = config.get("environments", {}).get(env)
    return f"--env-spec {shlex.quote(json.dumps(spec))}" if spec else ""


def embeddings_source_arg(config: dict[str, Any], kind: str) -> str:
    """``--from-file PATH`` when config names a file for this table kind, else ''."""
    path = config["embeddings"]["files"].get(kind)
    return f"--from-file {shlex.quote(str(path))}" if path else ""


def gems_config(config: dict[str, Any], tag: str | None = None) -> GeMSConfig:
    """The GeMS config of ``config`` (or of the variant named by ``tag``, other fields from config)."""
    base = from_dict(GeMSConfig, config["gems"], prefix="gems")
    return gems_config_from_tag(tag, base) if tag else base


def gems_tag(config: dict[str, Any]) -> str:
    return gems_config(config).tag


def agent_tags(config: dict[str, Any]) -> list[str]:
    """Agent tags of config.yaml's ``agents.names``: sac_gems gets the configured GeMS tag, the baselines of
    ``agents.variants`` their variant's tag (``<name>_corrected`` for the corrected one)."""
    variants = config["agents"].get("variants", {})
    return [variant_tag(name, variants.get(name, "published"), gems_tag(config) if needs_gems(name) else None)
            for name in config["agents"]["names"]]


def behaviour_tag(config: dict[str, Any]) -> str:
    """The tag of the agent that collects the offline datasets: SAC over the configured GeMS (the paper's method)."""
    return variant_tag("sac_gems", "published", gems_tag(config))


def section_args(config: dict[str, Any], section: str, prefix: str = "") -> str:
    """:func:`config_args` of config.yaml's ``section`` without the keys only the workflow reads
    (:data:`SECTIONS`): the options a stage takes from that section."""
    return config_args(config.get(section) or {}, skip=sections()[section][1], prefix=prefix)


def sections() -> dict[str, tuple[type, tuple[str, ...]]]:
    """:data:`SECTIONS`, every registered agent's config section and every registered offline method's section (its
    config class, no workflow key)."""
    return {**SECTIONS, **{name: (cls, ()) for name, cls in registered_sections().items()}}


def registered_sections() -> dict[str, type]:
    """The config class of every section a registration brings: each agent config section, each offline method's."""
    return {**agent_configs(), **ALGO_CONFIGS}


def agent_section_args(config: dict[str, Any], tag: str) -> str:
    """train-agent's options of the config section of agent ``tag`` (:func:`agent_section`) and of no other
    agent's: editing ``slateq`` leaves the SAC jobs' commands, hence their params, unchanged."""
    section = agent_section(tag)
    return section_args(config, section, prefix=agent_option_prefix(section))


def seeds_per_job(config: dict[str, Any], section: str) -> int:
    """``<section>.seeds_per_job`` (``online`` or ``offline``): how many seeds one training job trains; an integer
    >= 1, else one ConfigError naming the key."""
    value = config[section].get("seeds_per_job", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"config: key '{section}.seeds_per_job' must be an integer >= 1 (the seeds one training "
                          f"job trains; 1: one job per seed), got {value!r}")
    return value


def seed_chunks(seeds: list[int], size: int) -> list[list[int]]:
    """``seeds`` in order, cut into consecutive groups of ``size`` (the last one may be smaller)."""
    return [list(seeds[i:i + size]) for i in range(0, len(seeds), size)]


def seed_jobs(config: dict[str, Any], section: str) -> list[list[int] | None]:
    """The seed groups of the training jobs of ``section`` (``online``: ``agents.seeds``, ``offline``:
    ``offline.seeds``), one training rule each: ``[None]`` when ``<section>.seeds_per_job`` is 1 (one rule whose
    ``{seed}`` wildcard is its job's group of one: any seed), else the configured seeds in consecutive groups."""
    size = seeds_per_job(config, section)
    seeds = config["agents"]["seeds"] if section == "online" else config["offline"]["seeds"]
    if size == 1:
        return [None]
    return list(seed_chunks(seeds, size))


def job_rule_name(stage: str, group: list[int] | None) -> str:
    """The training rule of seed group ``group`` (:func:`seed_jobs`): ``stage`` itself for the one-seed rule."""
    return stage if group is None else f"{stage}_seeds_{'_'.join(map(str, group))}"


def job_label(group: list[int] | None) -> str:
    """The log/benchmark file stem of a training job of ``group``: ``seed{seed}``, or ``seeds0_1``."""
    return "seed{seed}" if group is None else f"seeds{'_'.join(map(str, group))}"


def per_seed(template: str, group: list[int] | None) -> list[str]:
    """``template`` (a path template of :mod:`slate_rl.core.artifacts`) for each seed of ``group``, its other
    fields left as wildcards; the template itself (``{seed}`` a wildcard) for the one-seed rule."""
    return [template] if group is None else [template.replace("{seed}", str(s)) for s in group]


def job_seeds(group: list[int] | None) -> Any:
    """The ``--seeds`` value of a training job of ``group``: its seed wildcard, or the group's seeds."""
    if group is None:
        return lambda wildcards: wildcards.seed
    return ",".join(map(str, group))


def seeds_template(template: str, wildcards: Any) -> str:
    """``template`` with the job's wildcards filled in and ``{seed}`` kept: the ``--output-dir``/``--results``/
    ``--policy-output`` of a ``--seeds`` run (quoted for the shell)."""
    return shlex.quote(template.format(**{**dict(wildcards.items()), "seed": "{seed}"}))


def config_args(values: dict[str, Any] | Any, skip: tuple[str, ...] = (), prefix: str = "") -> str:
    """``--key value`` options of a config section or dataclass (what ``slate-rl`` stages parse)."""
    items = to_dict(values) if not isinstance(values, dict) else values
    parts = []
    for key, value in items.items():
        if key in skip or value is None:  # null: the stage's default (e.g. cql.total_steps: offline.total_steps)
            continue
        name = (prefix + key).replace("_", "-")
        flag = "--" + name
        if isinstance(value, bool):
            parts.append(flag if value else f"--no-{name}")
        else:
            parts.append(f"{flag}={shlex.quote(str(value))}")  # = form: values like -inf are not options
    return " ".join(parts)
