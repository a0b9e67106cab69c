"""The one config system: typed dataclasses, built from plain dicts with clear errors.

Components declare their settings as ``@dataclass`` classes whose fields each carry a type
and a one-line docstring (the string literal right below the field). ``from_dict`` builds
one from a mapping (YAML, JSON, Snakemake's ``config``) and rejects unknown keys and wrong
types with a message naming the key. ``add_arguments``/``from_namespace`` expose the same
fields as command-line options, so ``slate-rl <stage> --help`` documents every option.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import inspect
import json
import math
import textwrap
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from slate_rl.core import artifacts
from slate_rl.core.errors import ConfigError

T = TypeVar("T")

Variant = artifacts.Variant
"""A component that reproduces a bug of the published code (naver/gems) offers both: ``published`` (the bug, so
the paper's numbers are reproduced) and ``corrected``."""


def field_docs(cls: type) -> dict[str, str]:
    """Map field name -> the docstring written under it in the class body."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0]
        assert isinstance(body, ast.ClassDef)
        stmts = body.body
        for prev, nxt in zip(stmts, stmts[1:], strict=False):
            if (
                isinstance(prev, ast.AnnAssign)
                and isinstance(prev.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[prev.target.id] = " ".join(nxt.value.value.split())
    return docs


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Return ``value`` converted to ``tp`` where lossless, else raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"config key {where!r}: invalid value {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"config key {where!r}: {value!r} is not one of {', '.join(map(repr, choices))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key {where!r}: expected a list, got {value!r}")
        (inner, *_) = typing.get_args(tp) or (Any,)
        return [_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {where!r}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {where!r}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {where!r}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"config key {where!r}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {where!r}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, value, prefix=where)
    return value


def from_dict(cls: type[T], data: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad types raise ConfigError."""
    data = dict(data or {})
    if not isinstance(data, dict):
        raise ConfigError(f"config key {prefix or '<root>'!r}: expected a mapping")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown config key {where!r}; valid keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        where = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _check_type(value, hints[name], where)
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config {prefix or cls.__name__}: {exc}") from exc
    return obj


SIZE_MAXIMA: dict[str, int] = {
    "sessions": 10_000_000, "test_sessions": 10_000_000, "val_sessions": 10_000_000, "bounds_sessions": 10_000_000,
    "episodes": 1_000_000, "buffer_capacity": 1_000_000, "batch_size": 10_000_000, "sessions_per_step": 1_000_000,
    "updates_per_step": 100_000, "total_steps": 100_000_000, "epochs": 100_000, "max_epochs": 100_000,
    "hidden": 65_536, "belief_dim": 65_536, "dim": 65_536, "latent_dim": 65_536, "embedding_dim": 65_536,
    "item_dim": 65_536, "layers": 256, "heads": 256, "context": 100_000, "horizon": 100_000,
    "diffusion_steps": 100_000, "sampling_steps": 100_000, "n_actions": 100_000, "grad_accumulation": 100_000,
    "samples": 100_000, "flow_steps": 100_000, "time_dim": 65_536,
    "num_topics": 32_767, "topic_size": 65_536, "episode_length": 1_000_000, "slate_size": 32_767,
}
"""Upper bounds, by field name in every config section, of the sizes that set memory or run time (100x the paper's
values or more): a size typed with too many zeros (``--hidden 100000000``, ``episodes: 1e11``) is one error naming
the key before any work, not a job killed for memory hours later. The schema's own maxima
(``session_count``, ``episode_count``) equal these (tests/test_bad_input.py checks it)."""


def check_fields(cfg: Any, positive: tuple[str, ...] = (), fraction: tuple[str, ...] = (),
                 nonnegative: tuple[str, ...] = (), prefix: str | None = None) -> None:
    """The range checks of a config section's dataclass: raise :class:`ConfigError` naming the key as written in
    config.yaml (``<cfg.SECTION>.<field>``, or ``<prefix>.<field>``) unless each ``positive`` field is > 0, each
    ``fraction`` field lies in (0, 1] and each ``nonnegative`` one is >= 0; integer fields (layer
    counts, widths...) must be integers and at most their :data:`SIZE_MAXIMA`; float fields must be finite (NaN never,
    +-inf only for the fields the class lists in its ``UNBOUNDED``: bounds that default to no bound)."""
    prefix = prefix or getattr(cfg, "SECTION", type(cfg).__name__)
    unbounded = getattr(cfg, "UNBOUNDED", ())
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.type in ("int", int) and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{prefix}.{f.name} must be an integer, got {value!r}")
        if isinstance(value, float) and not (math.isfinite(value) or (f.name in unbounded and not math.isnan(value))):
            raise ConfigError(f"{prefix}.{f.name} must be a finite number, got {value}")
        limit = SIZE_MAXIMA.get(f.name)
        if limit is not None and isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise ConfigError(f"{prefix}.{f.name} must be <= {limit}, got {value}")
    for key in positive:
        if not getattr(cfg, key) > 0:
            raise ConfigError(f"{prefix}.{key} must be > 0, got {getattr(cfg, key)}")
    for key in fraction:
        if not 0.0 < getattr(cfg, key) <= 1.0:
            raise ConfigError(f"{prefix}.{key} must be in (0, 1], got {getattr(cfg, key)}")
    for key in nonnegative:
        if not getattr(cfg, key) >= 0:
            raise ConfigError(f"{prefix}.{key} must be >= 0, got {getattr(cfg, key)}")


def finite_float(text: str) -> float:
    """argparse type of a real-valued option: a finite number (``nan``, ``inf`` are refused naming the option)."""
    value = _float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from exc


def _bound_or_float(text: str) -> float:
    """argparse type of a bound that may be infinite (no bound), never NaN."""
    value = _float(text)
    if math.isnan(value):
        raise argparse.ArgumentTypeError(f"must be a number or +-inf, got {text!r}")
    return value


def bounded_int(limit: int | None, minimum: int | None = None) -> Any:
    """argparse type of an integer option in [``minimum``, ``limit``] (``None``: no bound on that side)."""
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from exc
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if limit is not None and value > limit:
            raise argparse.ArgumentTypeError(f"must be <= {limit}, got {value}")
        return value
    return convert


def import_module(module_name: str, key: str) -> Any:
    """Module ``module_name`` (named by config key ``key``, named in the error), which must be importable:
    installed, or on ``PYTHONPATH``."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{key}: cannot import module {module_name!r} ({exc}); install it or put it on "
                          "PYTHONPATH") from exc


def resolve_object(spec: str, key: str) -> Any:
    """The object a ``"module:name"`` string names (config key ``key``, named in the error; :func:`import_module`)."""
    module_name, sep, name = spec.partition(":")
    if not sep or not module_name or not name:
        raise ConfigError(f"{key} is {spec!r}; write it as 'module:name', e.g. 'my_package.sim:MyConfig'")
    module = import_module(module_name, key)
    try:
        return getattr(module, name)
    except AttributeError:
        raise ConfigError(f"{key}: module {module_name!r} has no {name!r}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """Dataclass -> plain JSON-able dict (recursively)."""
    return dataclasses.asdict(obj)


def replace(obj: T, **changes: Any) -> T:
    """``dataclasses.replace`` that validates the changed fields like :func:`from_dict`."""
    return from_dict(type(obj), {**to_dict(obj), **changes})


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing file or a syntax error."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {p}{where}: not valid YAML ({problem}); fix the syntax there") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at the top level")
    return data


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (), prefix: str = "") -> None:
    """Add one ``--field-name`` option per dataclass field, documented from the field docstring.

    Options default to ``None`` (meaning: keep the dataclass default), so ``from_namespace``
    can tell which options the user actually gave. ``prefix`` namespaces the options when two
    dataclasses share field names (``--reinforce-gamma`` beside SAC's ``--gamma``).
    """
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"{docs.get(f.name, '')} (default: {default})"
        dest = prefix + f.name
        flag = "--" + dest.replace("_", "-")
        origin = typing.get_origin(tp)
        if tp is bool:
            parser.add_argument(flag, dest=dest, default=None, action=argparse.BooleanOptionalAction, help=help_text)
        elif origin is typing.Literal:
            parser.add_argument(flag, dest=dest, default=None, choices=typing.get_args(tp), help=help_text)
        elif origin in (list, dict) or (dataclasses.is_dataclass(tp)):
            parser.add_argument(flag, dest=dest, default=None, type=json.loads, help=help_text + " [JSON]")
        else:
            conv: Any = str
            base = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
            if base[0] is int:
                conv = bounded_int(SIZE_MAXIMA.get(f.name))
            elif base[0] is float:
                conv = _bound_or_float if f.name in getattr(cls, "UNBOUNDED", ()) else finite_float
            parser.add_argument(flag, dest=dest, default=None, type=conv, help=help_text)


def from_namespace(
    cls: type[T], ns: argparse.Namespace, base: Mapping[str, Any] | None = None, prefix: str = ""
) -> T:
    """Build ``cls`` from ``base`` overridden by the options given on the command line."""
    data = dict(base or {})
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = getattr(ns, prefix + f.name, None)
        if value is not None:
            data[f.name] = value
    return from_dict(cls, data)


def _key_path(parts: Any) -> str:
    return ".".join(str(p) for p in parts) or "<root>"


def validate_schema(config: Mapping[str, Any], schema: Mapping[str, Any], source: str = "config") -> None:
    """Validate ``config`` against a JSON schema; raise one ConfigError naming the key.

    Among all violations the most relevant one (``jsonschema.exceptions.best_match``) is
    reported, phrased as ``<source> key 'a.b': <problem>``.
    """
    import jsonschema
    from jsonschema.exceptions import best_match

    validator = jsonschema.Draft202012Validator(schema)
    error = best_match(validator.iter_errors(config))
    if error is None:
        return
    path = list(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed)) if isinstance(error.instance, dict) else []
        key = _key_path([*path, extra[0]]) if extra else _key_path(path)
        hint = f"; valid keys here: {', '.join(allowed)}" if allowed else ""
        raise ConfigError(f"{source}: unknown key {key!r}{hint}")
    if error.validator == "required":
        missing = [k for k in error.validator_value if k not in error.instance]
        raise ConfigError(f"{source}: missing key {_key_path([*path, missing[0]])!r}; add it (see config.yaml)")
    raise ConfigError(f"{source}: key {_key_path(path)!r}: {error.message}")
