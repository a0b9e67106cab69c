"""Per-environment tables: one row per method (online agent, or offline algorithm on one dataset
quality) and one per reference; and the aggregate of the offline methods over every dataset and
environment of a run.

Statistics of a row (a seed's score is its mean test return; :mod:`slate_rl.report.statistics`):

* return: the mean over seeds of the seeds' scores;
* 95% CI: Student-t half-width over the seeds' scores when there are >= 2 seeds, else the CI
  over the test sessions of the single seed (``ci_over`` says which: evaluation noise only);
* IQM: interquartile mean of the seeds' scores with its bootstrap 95% CI (none with one seed);
* P(> best): probability of improvement over the best method (the highest return), with its
  bootstrap 95% CI;
* p-value against the best method: paired t-test over the seeds both ran, Welch's t-test over
  the seeds when their seed sets differ (``p_over``: ``paired`` / ``welch``); none with one seed;
* peak / final (offline): the best and the last validation return of each seed's learning
  curve, mean and 95% CI over seeds: a method whose training collapses has final << peak;
* normalised score (offline): ``100 * (R - R_random) / (R_expert - R_random)`` (spec,
  models.md), taken from each seed's result, averaged over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from slate_rl.core.errors import ConfigError
from slate_rl.core.stats import mean_ci
from slate_rl.offline.config import display_names
from slate_rl.online.config import agent_display_names, agent_names, agent_variant, parse_agent_tag
from slate_rl.report.results import REFERENCE_POLICIES, Reference, Results, SeedResult
from slate_rl.report.statistics import compare_seeds, iqm_ci, probability_of_improvement

REFERENCE_NAMES = {
    "oracle": "Oracle",
    "eps-greedy": "ε-greedy oracle",
    "random": "Random slates",
    "behaviour": "Behaviour policy",
    "zero_action": "Zero latent action",
    "random_action": "Random latent action",
}
SEED_STAT_COLUMNS = [
    "iqm", "iqm_low", "iqm_high", "p_improve", "p_improve_low", "p_improve_high", "p_value", "p_over",
]
"""Columns of the statistics over seeds against the best method (:func:`seed_statistics`)."""
COLUMNS = [
    "env", "kind", "method", "label", "quality", "return_mean", "return_ci95", "ci_over", "n_sessions", "n_seeds",
    "seeds", "best", *SEED_STAT_COLUMNS, "peak_val", "peak_val_ci95", "final_val", "final_val_ci95",
    "normalized_score", "normalized_score_ci95",
]
"""Columns of ``{env}.csv`` and ``summary.csv``."""


def display_name(kind: str, method: str) -> str:
    """The name a reader knows a method or reference by (the tag itself when unknown)."""
    if kind == "online":
        try:
            base, _ = parse_agent_tag(method)
        except ConfigError:  # not a tag of this version: shown as it is
            return method
        name = agent_display_names().get(base, base)
        return f"{name} (corrected)" if agent_variant(method) == "corrected" else name
    if kind == "offline":
        return display_names().get(method, method)
    return REFERENCE_NAMES.get(method, method)


def method_rank(kind: str, method: str) -> int:
    """Position of a method in the papers' usual order (the registered agents': SAC+GeMS, then the online
    baselines; the registered offline methods': TD3+BC, CQL, IQL, BC...); unknown methods last."""
    if kind == "online":
        names = list(agent_names())
        try:
            method, _ = parse_agent_tag(method)
        except ConfigError:
            return len(names)
    else:
        names = list(display_names())
    return names.index(method) if method in names else len(names)


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

    def diagnostic_curves(self, name: str) -> list[np.ndarray]:
        """The (step, value) curve of diagnostic ``name`` of every seed that has it."""
        return [s.diagnostics[name] for s in self.seeds if name in s.diagnostics]

    @property
    def seed_scores(self) -> dict[int, float]:
        """Seed -> its mean test return."""
        return {s.seed: s.return_mean for s in self.seeds}

    def validation(self, which: str) -> tuple[float, float]:
        """Mean and 95% CI over seeds of each seed's ``peak`` (best) or ``final`` (last) validation return
        (NaN when a seed has no learning curve)."""
        curves = [s.learning_curve for s in self.seeds]
        if not curves or any(c is None or not len(c) for c in curves):
            return math.nan, math.nan
        values = [float(c[:, 1].max() if which == "peak" else c[-1, 1]) for c in curves if c is not None]
        summary = mean_ci(values)
        return summary["mean"], summary["ci"]


def seed_statistics(m: MethodSummary, best: MethodSummary | None) -> dict[str, float | str]:
    """IQM with its bootstrap CI, and against ``best``: probability of improvement with its CI and the
    paired (or Welch) p-value; NaN against itself and wherever a side has one seed."""
    est, low, high = iqm_ci([m.seed_means])
    row: dict[str, float | str] = {"iqm": est, "iqm_low": low, "iqm_high": high, "p_improve": math.nan,
                                   "p_improve_low": math.nan, "p_improve_high": math.nan, "p_value": math.nan,
                                   "p_over": ""}
    if best is not None and m is not best:
        prob, prob_low, prob_high = probability_of_improvement([m.seed_means], [best.seed_means])
        p, over = compare_seeds(m.seed_scores, best.seed_scores)
        row.update(p_improve=prob, p_improve_low=prob_low, p_improve_high=prob_high, p_value=p, p_over=over)
    return row


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


def diagnostic_qualities(report: EnvReport) -> list[str]:
    """The dataset qualities on which an offline method of ``report`` has diagnostics (each gets a figure,
    ``{env}_{quality}_diagnostics.png``), in the order of the methods."""
    out: list[str] = []
    for m in report.methods:
        if m.kind == "offline" and m.quality and m.quality not in out and any(s.diagnostics for s in m.seeds):
            out.append(m.quality)
    return out


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


def seed_normalized_scores(m: MethodSummary, refs: list[Reference]) -> np.ndarray:
    """Each seed's normalised score (recomputed from the references where a seed lacks it; NaN if undefined)."""
    random = next((r.return_mean for r in refs if r.name == "random_action"), math.nan)
    expert = next((r.return_mean for r in refs if r.name == "behaviour" and r.quality == "expert"), math.nan)
    return np.array([
        s.normalized_score if math.isfinite(s.normalized_score) else normalized_score(s.return_mean, random, expert)
        for s in m.seeds
    ], dtype=np.float64)


def _normalized(m: MethodSummary, refs: list[Reference]) -> tuple[float, float]:
    """Mean and CI over seeds of the normalised score."""
    scores = seed_normalized_scores(m, refs)
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
        norm, norm_ci = _normalized(m, report.references) if m.kind == "offline" else (math.nan, math.nan)
        peak, peak_ci = m.validation("peak")
        final, final_ci = m.validation("final")
        rows.append({
            "env": report.env, "kind": m.kind, "method": m.method, "label": m.label, "quality": m.quality or "",
            "return_mean": m.return_mean, "return_ci95": ci, "ci_over": ci_over, "n_sessions": m.n_sessions(),
            "n_seeds": m.n_seeds, "seeds": " ".join(str(s.seed) for s in m.seeds), "best": m is best,
            **seed_statistics(m, best), "peak_val": peak, "peak_val_ci95": peak_ci, "final_val": final,
            "final_val_ci95": final_ci, "normalized_score": norm, "normalized_score_ci95": norm_ci,
        })
    for r in report.references:
        rows.append({
            **dict.fromkeys(COLUMNS, math.nan),
            "env": report.env, "kind": "reference", "method": r.name, "label": REFERENCE_NAMES.get(r.name, r.name),
            "quality": r.quality or "", "return_mean": r.return_mean, "return_ci95": r.return_ci95,
            "ci_over": "sessions", "n_sessions": r.n_sessions, "n_seeds": 0, "seeds": "", "best": False, "p_over": "",
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["n_sessions"] = table["n_sessions"].astype("Int64")
    return table


DATASET_COLUMNS = [
    "env", "quality", "kind", "method", "label", "return_mean", "return_ci95", "ci_over", "pct_behaviour",
    "normalized_score", "best", *SEED_STAT_COLUMNS, "peak_val", "peak_val_ci95", "final_val", "final_val_ci95",
    "n_seeds",
]
"""Columns of ``{env}_datasets.csv``: the offline methods of each dataset, with the dataset's references."""

QUALITY_ORDER = ("expert", "medium", "random", "replay", "logged", "step_mix", "noise_sweep")


def dataset_table(report: EnvReport) -> pd.DataFrame:
    """One block per dataset quality: its offline methods (best first; statistics against the best method
    *on this dataset*, return as a % of this dataset's behaviour return, peak and final validation
    return),
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
            peak, peak_ci = m.validation("peak")
            final, final_ci = m.validation("final")
            rows.append({
                "env": report.env, "quality": quality, "kind": "offline", "method": m.method, "label": m.label,
                "return_mean": m.return_mean, "return_ci95": ci, "ci_over": ci_over,
                "pct_behaviour": 100.0 * m.return_mean / base if base else math.nan,
                "normalized_score": _normalized(m, report.references)[0], "best": m is best,
                **seed_statistics(m, best), "peak_val": peak, "peak_val_ci95": peak_ci, "final_val": final,
                "final_val_ci95": final_ci,
                "n_seeds": m.n_seeds,
            })
        refs = [behaviour] + [r for r in report.references if r.name in ("zero_action", "random_action")]
        for r in refs:
            if r is None:
                continue
            rows.append({
                **dict.fromkeys(DATASET_COLUMNS, math.nan),
                "env": report.env, "quality": quality, "kind": "reference", "method": r.name,
                "label": REFERENCE_NAMES.get(r.name, r.name), "return_mean": r.return_mean,
                "return_ci95": r.return_ci95, "ci_over": "sessions",
                "pct_behaviour": 100.0 * r.return_mean / base if base else math.nan,
                "best": False, "p_over": "", "n_seeds": 0,
            })
    return pd.DataFrame(rows, columns=DATASET_COLUMNS)


def summary_table(reports: Sequence[EnvReport]) -> pd.DataFrame:
    """All environments' tables, one after the other (``summary.csv``)."""
    tables = [r.table for r in reports if len(r.table)]
    if not tables:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(tables, ignore_index=True)


AGGREGATE_COLUMNS = [
    "method", "label", "n_tasks", "n_runs", "mean_score", "iqm", "iqm_low", "iqm_high", "p_improve", "p_improve_low",
    "p_improve_high", "best",
]
"""Columns of ``aggregate.csv``: each offline algorithm over every dataset and environment of the run."""


@dataclass
class Aggregate:
    """The offline algorithms' normalised scores over the tasks (environment, dataset quality) they all ran."""

    tasks: list[tuple[str, str]]
    scores: dict[str, list[np.ndarray]]
    """Algorithm -> its seeds' normalised scores on each task, in the order of ``tasks``."""
    labels: dict[str, str]
    table: pd.DataFrame


def aggregate_offline(reports: Sequence[EnvReport]) -> Aggregate:
    """IQM of the normalised scores over every task (stratified bootstrap CI) and the probability of improvement
    over the method of the highest IQM, on the tasks that every offline algorithm ran (a task where one of them
    lacks results would compare different things)."""
    per_method: dict[str, dict[tuple[str, str], np.ndarray]] = {}
    for report in reports:
        for m in report.methods:
            if m.kind == "offline" and m.quality:
                seed_scores = seed_normalized_scores(m, report.references)
                if seed_scores.size and np.isfinite(seed_scores).all():
                    per_method.setdefault(m.method, {})[(report.env, m.quality)] = seed_scores
    common = set.intersection(*(set(t) for t in per_method.values())) if per_method else set()
    tasks = sorted(common)
    scores = {method: [by_task[t] for t in tasks] for method, by_task in per_method.items()} if tasks else {}
    labels = {method: display_names().get(method, method) for method in scores}
    rows: list[dict[str, Any]] = []
    for method, strata in scores.items():
        est, low, high = iqm_ci(strata)
        rows.append({"method": method, "label": labels[method], "n_tasks": len(tasks),
                     "n_runs": int(sum(s.size for s in strata)), "mean_score": float(np.concatenate(strata).mean()),
                     "iqm": est, "iqm_low": low, "iqm_high": high})
    rows.sort(key=lambda r: (-r["iqm"], r["label"]))
    if rows:
        best = rows[0]["method"]
        for row in rows:
            prob = (math.nan,) * 3 if row["method"] == best else probability_of_improvement(scores[row["method"]],
                                                                                              scores[best])
            row.update(p_improve=prob[0], p_improve_low=prob[1], p_improve_high=prob[2], best=row["method"] == best)
    return Aggregate(tasks, scores, labels, pd.DataFrame(rows, columns=AGGREGATE_COLUMNS))
