"""Collect the result JSONs of a results directory.

Layouts (relative to the results directory, the README's artifact table):

===========================================  =====================================
``{env}/reference/{policy}.json``            a reference policy (random, oracle, eps-greedy)
``{env}/online/{agent_tag}/seed{s}.json``    one seed of an online agent
``{env}/{quality}/{algo}/seed{s}.json``      one seed of an offline algorithm
``{env}/{algo}.json``                        an offline algorithm, aggregated over seeds
===========================================  =====================================

The report rule names its inputs (the results of the current configuration), so results of
earlier configurations left under ``results/`` never enter the report. A file that cannot be
read or lacks a field is skipped with a warning that names it (the report lists it too); a
JSON file in no known layout is ignored. Nothing here raises on bad results: a report of what
exists beats no report.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slate_rl.core.errors import ArtifactError
from slate_rl.core.stats import mean_ci

log = logging.getLogger(__name__)

_SEED_FILE = re.compile(r"seed(\d+)\.json")
TIMINGS_SUFFIX = ".timings.json"
REFERENCE_POLICIES = ("oracle", "eps-greedy", "random")
"""Reference policies of the simulator, in the order the report lists them."""
OFFLINE_REFERENCES = ("behaviour", "zero_action", "random")
"""Reference points of an offline result (its ``references`` field)."""


class MalformedResult(ValueError):
    """A result file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Reference:
    """A return that methods are compared with (a reference policy, or an offline reference point)."""

    env: str
    name: str
    """``random``, ``oracle``, ``eps-greedy``; or ``behaviour``, ``zero_action``, ``random_action``."""
    return_mean: float
    return_ci95: float
    n_sessions: int | None
    quality: str | None = None
    """Dataset quality of an offline ``behaviour`` reference, else None."""


@dataclass(eq=False)
class SeedResult:
    """The test result of one seed of one method (online agent or offline algorithm)."""

    env: str
    kind: str
    """``online`` or ``offline``."""
    method: str
    """Agent tag or offline algorithm name."""
    quality: str | None
    """Dataset quality (offline), None for online agents."""
    seed: int
    return_mean: float
    return_ci95: float
    """Half-width of the 95% CI over this seed's test sessions (NaN if unknown)."""
    n_sessions: int | None
    returns: np.ndarray | None
    """Per-session test returns (None when the file has none)."""
    learning_curve: np.ndarray | None
    """(k, 2) array of (step, validation return), or None."""
    normalized_score: float = math.nan
    references: list[Reference] = field(default_factory=list)
    path: str = ""
    diagnostics: dict[str, np.ndarray] = field(default_factory=dict)
    """Diagnostic name -> (k, 2) array of (step, value) over the validations where it has a value (the
    ``diagnostics`` field of an offline result, :mod:`slate_rl.offline.diagnostics`); empty without one."""


@dataclass
class Results:
    """Everything usable found in a results directory."""

    references: list[Reference] = field(default_factory=list)
    seeds: list[SeedResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(file, reason) of every file that could not be used."""
    ignored: list[str] = field(default_factory=list)
    """JSON files in no known result layout."""
    files_read: int = 0

    def envs(self) -> list[str]:
        """Environments with at least one result, sorted by name."""
        return sorted({r.env for r in self.references} | {s.env for s in self.seeds})


def collect_results(results_dir: str | Path, files: Sequence[str | Path] | None = None) -> Results:
    """Read the result JSONs ``files`` (paths inside ``results_dir``; the report rule passes its
    declared inputs), or every JSON under ``results_dir`` when ``files`` is None (a report by
    hand of whatever exists). Sorted path order, so the outcome is deterministic. A malformed file is
    skipped with a warning in a directory scan, and one :class:`ArtifactError` among declared ``files``."""
    root = Path(results_dir)
    results = Results()
    if files is None:
        if not root.is_dir():
            return results
        # A run's timings file holds wall-clock figures, not results: the report never reads it (the
        # report rule's outputs must be the same bytes on every run of the same results).
        paths = sorted(p for p in root.rglob("*.json") if not p.name.endswith(TIMINGS_SUFFIX))
    else:
        paths = sorted(Path(f) for f in files)
    aggregates: list[SeedResult] = []
    for path in paths:
        try:
            parts = path.resolve().relative_to(root.resolve()).parts
        except ValueError:
            parts = ()
        kind = _layout(parts)
        if kind is None:
            results.ignored.append(str(path))
            continue
        try:
            data = _read_object(path)
            if kind == "reference":
                results.references.append(_reference(data, parts, path))
            elif kind == "aggregate":
                aggregates.extend(_aggregate(data, parts, path))
            else:
                results.seeds.append(_seed_result(data, parts, kind, path))
            results.files_read += 1
        except MalformedResult as exc:
            if files is not None:  # a declared input (the report rule's): damage is an error, not a gap
                raise ArtifactError(f"{path}: {exc}; rerun the rule that writes it") from None
            log.warning("skipped %s: %s", path, exc)
            results.skipped.append((str(path), str(exc)))
    # An aggregate supplies the seeds whose own files are absent (e.g. cleaned up after aggregation).
    have = {(s.env, s.method, s.quality, s.seed) for s in results.seeds if s.kind == "offline"}
    results.seeds.extend(a for a in aggregates if (a.env, a.method, a.quality, a.seed) not in have)
    return results


def _layout(parts: tuple[str, ...]) -> str | None:
    if len(parts) == 2:
        return "aggregate"
    if len(parts) == 3 and parts[1] == "reference":
        return "reference"
    if len(parts) == 4 and _SEED_FILE.fullmatch(parts[3]):
        return "online" if parts[1] == "online" else "offline"
    return None


def _read_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedResult(f"not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise MalformedResult(f"expected a JSON object, found {type(data).__name__}")
    return data


def _number(data: dict[str, Any], key: str, required: bool = True) -> float:
    value = data.get(key)
    if value is None and not required:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float) or (required and not math.isfinite(value)):
        raise MalformedResult(f"field {key!r} is {value!r}, expected a {'finite ' * required}number")
    return float(value)


def _count(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MalformedResult(f"field {key!r} is {value!r}, expected a non-negative integer")
    return value


def _check_field(data: dict[str, Any], key: str, expected: str) -> None:
    """The path says what the file holds; a field that disagrees means a misplaced file."""
    if data.get(key) != expected:
        raise MalformedResult(f"field {key!r} is {data.get(key)!r}, but the file's path says {expected!r}")


def _array(data: dict[str, Any], key: str, ndim: int) -> np.ndarray | None:
    value = data.get(key)
    if value is None:
        return None
    if not _all_numbers(value):
        raise MalformedResult(f"field {key!r} is not a list of numbers")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MalformedResult(f"field {key!r} is not a list of numbers") from exc
    if arr.size == 0:
        return None
    if arr.ndim != ndim or (ndim == 2 and arr.shape[1] != 2):
        shape = "a list of numbers" if ndim == 1 else "a list of [step, return] pairs"
        raise MalformedResult(f"field {key!r} has shape {arr.shape}, expected {shape}")
    return arr


def _all_numbers(value: Any) -> bool:
    """A (nested) list of JSON numbers: no strings or booleans, which numpy would convert silently."""
    if isinstance(value, list):
        return all(_all_numbers(v) for v in value)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _reference(data: dict[str, Any], parts: tuple[str, ...], path: Path) -> Reference:
    env, policy = parts[0], Path(parts[2]).stem
    _check_field(data, "env", env)
    _check_field(data, "policy", policy)
    return Reference(env, policy, _number(data, "return_mean"), _number(data, "return_ci95", required=False),
                     _count(data, "n_sessions"))


def _offline_references(data: dict[str, Any], env: str, quality: str | None) -> list[Reference]:
    refs = data.get("references")
    if refs is None:
        return []
    if not isinstance(refs, dict):
        raise MalformedResult(f"field 'references' is {refs!r}, expected an object")
    out = []
    for name in OFFLINE_REFERENCES:
        ref = refs.get(name)
        if ref is None:
            continue
        if not isinstance(ref, dict):
            raise MalformedResult(f"field 'references.{name}' is {ref!r}, expected an object")
        out.append(Reference(
            env, "random_action" if name == "random" else name,
            _number(ref, "return_mean"), _number(ref, "return_ci95", required=False), _count(ref, "n_sessions"),
            quality if name == "behaviour" else None,
        ))
    return out


def _seed_result(data: dict[str, Any], parts: tuple[str, ...], kind: str, path: Path) -> SeedResult:
    env, seed = parts[0], int(_SEED_FILE.fullmatch(parts[3]).group(1))  # type: ignore[union-attr]
    _check_field(data, "env", env)
    if kind == "online":
        method, quality = parts[2], None
        _check_field(data, "agent", method)
    else:
        quality, method = parts[1], parts[2]
        _check_field(data, "algo", method)
        _check_field(data, "quality", quality)
    if data.get("seed") != seed:
        raise MalformedResult(f"field 'seed' is {data.get('seed')!r}, but the file's name says {seed}")
    returns = _array(data, "returns", 1)
    ci = _number(data, "return_ci95", required=False)
    n = _count(data, "n_sessions")
    if returns is not None:
        n = n if n is not None else int(returns.size)
        if math.isnan(ci):
            ci = mean_ci(returns)["ci"]
    return SeedResult(
        env, kind, method, quality, seed, _number(data, "return_mean"), ci, n, returns,
        _array(data, "learning_curve", 2), _number(data, "normalized_score", required=False),
        _offline_references(data, env, quality), str(path), _diagnostics(data),
    )


def _diagnostics(data: dict[str, Any]) -> dict[str, np.ndarray]:
    """The ``diagnostics`` field (``[[step, {name: value or null}], ...]``) as one (step, value) curve per name;
    {} when the result has none (results written before diagnostics existed)."""
    value = data.get("diagnostics")
    if value is None:
        return {}
    if not isinstance(value, list) or not all(
            isinstance(e, list) and len(e) == 2 and _all_numbers(e[0]) and isinstance(e[1], dict) for e in value):
        raise MalformedResult("field 'diagnostics' is not a list of [step, {name: value}] pairs")
    points: dict[str, list[tuple[float, float]]] = {}
    for step, diag in value:
        for name, v in diag.items():
            if v is not None:
                if not _all_numbers(v) or isinstance(v, list):
                    raise MalformedResult(f"field 'diagnostics' has a non-number {name!r} at step {step}")
                points.setdefault(name, []).append((float(step), float(v)))
    return {name: np.asarray(p, dtype=np.float64) for name, p in points.items()}


def _aggregate(data: dict[str, Any], parts: tuple[str, ...], path: Path) -> list[SeedResult]:
    """The per-seed entries of an aggregate, as seed results without sessions or curves."""
    env, algo = parts[0], Path(parts[1]).stem
    _check_field(data, "env", env)
    _check_field(data, "algo", algo)
    quality = data.get("quality")
    if not isinstance(quality, str) or not quality:
        raise MalformedResult(f"field 'quality' is {quality!r}, expected a dataset quality")
    per_seed = data.get("per_seed")
    if not isinstance(per_seed, list) or not all(isinstance(e, dict) for e in per_seed):
        raise MalformedResult(f"field 'per_seed' is {per_seed!r}, expected a list of objects")
    refs = _offline_references(data, env, quality)
    out = []
    for entry in per_seed:
        seed = _count(entry, "seed")
        if seed is None:
            raise MalformedResult("an entry of 'per_seed' has no 'seed'")
        out.append(SeedResult(
            env, "offline", algo, quality, seed, _number(entry, "return_mean"), math.nan, None, None, None,
            _number(entry, "normalized_score", required=False), refs, str(path),
        ))
    return out
