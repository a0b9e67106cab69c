"""Per-environment tables: one row per method (online agent, or offline algorithm on one dataset
quality) and one per reference, with 95% CIs, Welch's t-tests and normalised scores.

Statistics of a row:

* return: the mean over seeds of each seed's mean test return;
* 95% CI: Student-t half-width over the per-seed means when there are >= 2 seeds, else the
  CI over the test sessions of the single seed (``ci_over`` says which);
* p-value: Welch's t-test (unequal variances) of the row against the env's best method (the
  highest return), over per-seed means when both have >= 2 seeds, else over per-session
  returns pooled over seeds (``p_over`` says which; NaN when neither is available);
* normalised score (offline): ``100 * (R - R_random) / (R_expert - R_random)`` (spec,
  models.md), taken from each seed's result, averaged over seeds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from slate_rl.core.artifacts import (
    AGENT_DISPLAY_NAMES,
    OFFLINE_ALGO_DISPLAY_NAMES,
    SAC_GEMS_PREFIX,
    agent_variant,
    parse_agent_tag,
)
from slate_rl.core.errors import ConfigError
from slate_rl.core.stats import mean_ci
from slate_rl.report.results import REFERENCE_POLICIES, Reference, Results, SeedResult

ONLINE_NAMES = {k: v for k, v in AGENT_DISPLAY_NAMES.items() if k != "sac_gems"}
OFFLINE_NAMES = OFFLINE_ALGO_DISPLAY_NAMES
REFERENCE_NAMES = {
    "oracle": "Oracle",
    "eps-greedy": "ε-greedy oracle",
    "random": "Random slates",
    "behaviour": "Behaviour policy",
    "zero_action": "Zero latent action",
    "random_action": "Random latent action",
}
COLUMNS = [
    "env", "kind", "method", "label", "quality", "return_mean", "return_ci95", "ci_over", "n_sessions", "n_seeds",
    "seeds", "best", "p_value", "p_over", "normalized_score", "normalized_score_ci95",
]
"""Columns of ``{env}.csv`` and ``summary.csv``."""


def display_name(kind: str, method: str) -> str:
    """The name a reader knows a method or reference by (the tag itself when unknown)."""
    if kind == "online":
        try:
            base, _ = parse_agent_tag(method)
        except ConfigError:  # not a tag of this version: shown as it is
            return method
        name = AGENT_DISPLAY_NAMES.get(base, base)
        return f"{name} (corrected)" if agent_variant(method) == "corrected" else name
    if kind == "offline":
        return OFFLINE_NAMES.get(method, method)
    return REFERENCE_NAMES.get(method, method)


def method_rank(kind: str, method: str) -> int:
    """Position of a method in the papers' usual order (SAC+GeMS, then the online baselines; TD3+BC,
    CQL, IQL, BC); unknown methods last."""
    if kind == "online" and method.startswith(SAC_GEMS_PREFIX):
        return 0
    names = list(ONLINE_NAMES if kind == "online" else OFFLINE_NAMES)
    return int(kind == "online") + (names.index(method) if method in names else len(names))


def welch_p(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided p-value of Welch's t-test (NaN when a sample has fewer than two values)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.size < 2 or y.size < 2:
        return math.nan
    with warnings.catch_warnings():  # identical constant samples: NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


def normalized_score(ret: float, random_return: float, expert_return: float) -> float:
    """``100 * (R - R_random) / (R_expert - R_random)``: 0 is random, 100 is the expert (NaN if undefined)."""
    span = expert_return - random_return
    if not math.isfinite(span) or span == 0:
        return math.nan
    return 100.0 * (ret - random_return) / span


@dataclass
class MethodSummary:
    """The seeds of one method (an online agent, or an offline algorithm on one dataset quality)."""

    kind: str
    method: str
    quality: str | None
    label: str
    seeds: list[SeedResult]
    """Sorted by seed."""

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def seed_means(self) -> np.ndarray:
        return np.array([s.return_mean for s in self.seeds], dtype=np.float64)

    @property
    def return_mean(self) -> float:
        return float(self.seed_means.mean())

    def return_ci(self) -> tuple[float, str]:
        """Half-width of the 95% CI and what it is over (``seeds`` or ``sessions``)."""
        if self.n_seeds >= 2:
            return mean_ci(self.seed_means)["ci"], "seeds"
        return self.seeds[0].return_ci95, "sessions"

    def session_returns(self) -> np.ndarray | None:
        """Per-session returns pooled over seeds (None when a seed has none)."""
        if any(s.returns is None for s in self.seeds):
            return None
        return np.concatenate([s.returns for s in self.seeds if s.returns is not None])

    def n_sessions(self) -> int | None:
        counts = [s.n_sessions for s in self.seeds]
        return None if any(c is None for c in counts) else sum(c for c in counts if c is not None)

    def curves(self) -> list[np.ndarray]:
        return [s.learning_curve for s in self.seeds if s.learning_curve is not None]

    def compare(self, best: MethodSummary) -> tuple[float, str]:
        """Welch p-value against ``best`` and what the samples are (``seeds``, ``sessions``, or ``""``)."""
        if self.n_seeds >= 2 and best.n_seeds >= 2:
            return welch_p(self.seed_means, best.seed_means), "seeds"
        mine, theirs = self.session_returns(), best.session_returns()
        if mine is not None and theirs is not None:
            return welch_p(mine, theirs), "sessions"
        return math.nan, ""


@dataclass
class EnvReport:
    """What the report says about one environment."""

    env: str
    methods: list[MethodSummary] = field(default_factory=list)
    """Best first (descending return, then name)."""
    references: list[Reference] = field(default_factory=list)
    """Simulator references (oracle, eps-greedy, random), then offline reference points."""
    table: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=COLUMNS))

    @property
    def best(self) -> MethodSummary | None:
        return self.methods[0] if self.methods else None

    def method_label(self, m: MethodSummary) -> str:
        """The label with the dataset quality of offline methods, e.g. ``TD3+BC (expert)``."""
        return f"{m.label} ({m.quality})" if m.quality else m.label

    def reference_label(self, r: Reference) -> str:
        name = REFERENCE_NAMES.get(r.name, r.name)
        return f"{name} ({r.quality} data)" if r.quality else name


def build_env_report(results: Results, env: str) -> EnvReport:
    """Group the env's seeds into methods, order them, and build the table."""
    groups: dict[tuple[str, str, str | None], list[SeedResult]] = {}
    for s in results.seeds:
        if s.env == env:
            groups.setdefault((s.kind, s.method, s.quality), []).append(s)
    methods = [
        MethodSummary(kind, method, quality, display_name(kind, method), sorted(seeds, key=lambda s: s.seed))
        for (kind, method, quality), seeds in groups.items()
    ]
    _disambiguate(methods)
    methods.sort(key=lambda m: (-m.return_mean, m.label, m.quality or ""))
    report = EnvReport(env, methods, _references(results, env))
    report.table = _table(report)
    return report


def _disambiguate(methods: list[MethodSummary]) -> None:
    """Two methods of one kind with one display name (e.g. two GeMS variants): append the tag."""
    seen: dict[tuple[str, str, str | None], int] = {}
    for m in methods:
        key = (m.kind, m.label, m.quality)
        seen[key] = seen.get(key, 0) + 1
    for m in methods:
        if seen[(m.kind, m.label, m.quality)] > 1:
            m.label = f"{m.label} [{m.method}]"


def _references(results: Results, env: str) -> list[Reference]:
    sim = {r.name: r for r in results.references if r.env == env}
    refs = [sim[name] for name in REFERENCE_POLICIES if name in sim]
    refs += [sim[name] for name in sorted(sim) if name not in REFERENCE_POLICIES]
    # Offline reference points: the first found (in path order) per name and dataset quality.
    offline: dict[tuple[str, str], Reference] = {}
    for s in sorted((s for s in results.seeds if s.env == env), key=lambda s: s.path):
        for r in s.references:
            offline.setdefault((r.name, r.quality or ""), r)
    order = {"behaviour": 0, "zero_action": 1, "random_action": 2}
    refs += [offline[k] for k in sorted(offline, key=lambda k: (order.get(k[0], 3), k[0], k[1]))]
    return refs


def _normalized(m: MethodSummary, refs: list[Reference]) -> tuple[float, float]:
    """Mean and CI over seeds of the normalised score (recomputed from references where a seed lacks it)."""
    random = next((r.return_mean for r in refs if r.name == "random_action"), math.nan)
    expert = next((r.return_mean for r in refs if r.name == "behaviour" and r.quality == "expert"), math.nan)
    scores = np.array([
        s.normalized_score if math.isfinite(s.normalized_score) else normalized_score(s.return_mean, random, expert)
        for s in m.seeds
    ])
    scores = scores[np.isfinite(scores)]
    if scores.size == 0:
        return math.nan, math.nan
    summary = mean_ci(scores)
    return summary["mean"], summary["ci"]


def _table(report: EnvReport) -> pd.DataFrame:
    rows = []
    best = report.best
    for m in report.methods:
        ci, ci_over = m.return_ci()
        p, p_over = (math.nan, "") if m is best or best is None else m.compare(best)
        norm, norm_ci = _normalized(m, report.references) if m.kind == "offline" else (math.nan, math.nan)
        rows.append({
            "env": report.env, "kind": m.kind, "method": m.method, "label": m.label, "quality": m.quality or "",
            "return_mean": m.return_mean, "return_ci95": ci, "ci_over": ci_over, "n_sessions": m.n_sessions(),
            "n_seeds": m.n_seeds, "seeds": " ".join(str(s.seed) for s in m.seeds), "best": m is best,
            "p_value": p, "p_over": p_over, "normalized_score": norm, "normalized_score_ci95": norm_ci,
        })
    for r in report.references:
        rows.append({
            "env": report.env, "kind": "reference", "method": r.name, "label": REFERENCE_NAMES.get(r.name, r.name),
            "quality": r.quality or "", "return_mean": r.return_mean, "return_ci95": r.return_ci95,
            "ci_over": "sessions", "n_sessions": r.n_sessions, "n_seeds": 0, "seeds": "", "best": False,
            "p_value": math.nan, "p_over": "", "normalized_score": math.nan, "normalized_score_ci95": math.nan,
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["n_sessions"] = table["n_sessions"].astype("Int64")
    return table


DATASET_COLUMNS = [
    "env", "quality", "kind", "method", "label", "return_mean", "return_ci95", "ci_over", "pct_behaviour",
    "normalized_score", "best", "p_value", "p_over", "n_seeds",
]
"""Columns of ``{env}_datasets.csv``: the offline methods of each dataset, with the dataset's references."""

QUALITY_ORDER = ("expert", "medium", "random", "replay")


def dataset_table(report: EnvReport) -> pd.DataFrame:
    """One block per dataset quality: its offline methods (best first; p-values against the best method
    *on this dataset*, return as a % of this dataset's behaviour return),
    then the dataset's behaviour and the zero / random latent-action references."""
    qualities = sorted({m.quality for m in report.methods if m.kind == "offline" and m.quality},
                       key=lambda q: (QUALITY_ORDER.index(q) if q in QUALITY_ORDER else len(QUALITY_ORDER), q))
    rows = []
    for quality in qualities:
        methods = [m for m in report.methods if m.kind == "offline" and m.quality == quality]
        behaviour = next((r for r in report.references if r.name == "behaviour" and r.quality == quality), None)
        base = behaviour.return_mean if behaviour is not None else math.nan
        best = methods[0]
        for m in methods:
            ci, ci_over = m.return_ci()
            p, p_over = (math.nan, "") if m is best else m.compare(best)
            rows.append({
                "env": report.env, "quality": quality, "kind": "offline", "method": m.method, "label": m.label,
                "return_mean": m.return_mean, "return_ci95": ci, "ci_over": ci_over,
                "pct_behaviour": 100.0 * m.return_mean / base if base else math.nan,
                "normalized_score": _normalized(m, report.references)[0], "best": m is best,
                "p_value": p, "p_over": p_over,
                "n_seeds": m.n_seeds,
            })
        refs = [behaviour] + [r for r in report.references if r.name in ("zero_action", "random_action")]
        for r in refs:
            if r is None:
                continue
            rows.append({
                "env": report.env, "quality": quality, "kind": "reference", "method": r.name,
                "label": REFERENCE_NAMES.get(r.name, r.name), "return_mean": r.return_mean,
                "return_ci95": r.return_ci95, "ci_over": "sessions",
                "pct_behaviour": 100.0 * r.return_mean / base if base else math.nan,
                "normalized_score": math.nan, "best": False, "p_value": math.nan, "p_over": "",
                "n_seeds": 0,
            })
    return pd.DataFrame(rows, columns=DATASET_COLUMNS)


def summary_table(reports: Sequence[EnvReport]) -> pd.DataFrame:
    """All environments' tables, one after the other (``summary.csv``)."""
    tables = [r.table for r in reports if len(r.table)]
    if not tables:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(tables, ignore_index=True)
