"""Statistics over seeds for the report: the definitions of Agarwal et al. (2021, *Deep RL at the Edge of
the Statistical Precipice*; the ``rliable`` package), computed with ``scipy.stats``.

A *task* is one environment and dataset (or one environment, online); a *run* is one seed. The estimates:

* **IQM**: the interquartile mean of every run's score over all tasks pooled (``scipy.stats.trim_mean``
  cutting 25 % at each end: rliable's ``aggregate_iqm``);
* **stratified bootstrap CI**: runs resampled with replacement within each task, tasks independently
  (``scipy.stats.bootstrap`` over one sample per task, unpaired: rliable's ``StratifiedBootstrap``),
  percentile interval, a fixed generator so the same inputs give the same bytes;
* **probability of improvement** P(X > Y): for each task the Mann-Whitney U statistic of X's runs over
  Y's divided by the number of pairs (ties count one half), averaged over tasks (rliable's
  ``probability_of_improvement``), with a stratified bootstrap CI resampling X's and Y's runs apart;
* **paired test**: a paired t-test over the seeds both methods ran (``scipy.stats.ttest_rel``), used when
  both ran the same >= 2 seeds: every run of the pipeline is tested on the same fixed users with the same
  evaluation seed, so seed ``s`` of one method and seed ``s`` of another are compared on identical
  sessions; Welch's t-test over the seeds when the seed sets differ; nothing with one seed.

rliable itself is not a dependency: its 1.2 release needs ``arch < 8``, which fails to import under
pandas 3; these are the same estimators on scipy's bootstrap.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
N_RESAMPLES = 2000
"""Bootstrap resamples (rliable's examples use 2,000 to 50,000; 2,000 keeps the report in seconds)."""
BOOTSTRAP_SEED = 0
"""The bootstrap's generator seed: the report is the same bytes on every run."""


def _arrays(strata: Sequence[Sequence[float] | np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(s, dtype=np.float64).ravel() for s in strata]


def iqm(strata: Sequence[Sequence[float] | np.ndarray]) -> float:
    """Interquartile mean of the runs of every task pooled (NaN when there are none)."""
    values = np.concatenate(_arrays(strata)) if strata else np.empty(0)
    return float(stats.trim_mean(values, 0.25)) if values.size else math.nan


def _iqm_statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(stats.trim_mean(np.concatenate(samples, axis=axis), 0.25, axis=axis))


def _bootstrap(samples: list[np.ndarray], statistic: Callable[..., np.ndarray]) -> tuple[float, float]:
    """Percentile CI of ``statistic`` under resampling of each sample apart; NaN when a sample has one value
    (a single seed has no spread to resample)."""
    if not samples or any(s.size < 2 for s in samples):
        return math.nan, math.nan
    with warnings.catch_warnings():  # a constant sample gives a degenerate interval, which is the answer
        warnings.simplefilter("ignore")
        ci = stats.bootstrap(samples, statistic, n_resamples=N_RESAMPLES, confidence_level=CONFIDENCE,
                             method="percentile", vectorized=True, paired=False,
                             rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
    return float(ci.low), float(ci.high)


def iqm_ci(strata: Sequence[Sequence[float] | np.ndarray]) -> tuple[float, float, float]:
    """IQM and its stratified bootstrap 95 % CI (low, high): ``strata`` holds each task's run scores."""
    samples = _arrays(strata)
    return (iqm(samples), *_bootstrap(samples, _iqm_statistic))


def _improvement_statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over tasks of P(X > Y); ``samples`` alternates each task's X runs and Y runs."""
    probs = []
    for x, y in zip(samples[0::2], samples[1::2], strict=True):
        u = stats.mannwhitneyu(x, y, axis=axis, alternative="greater", method="asymptotic").statistic
        probs.append(np.asarray(u) / (x.shape[axis] * y.shape[axis]))
    return np.mean(probs, axis=0)


def probability_of_improvement(x_strata: Sequence[Sequence[float] | np.ndarray],
                               y_strata: Sequence[Sequence[float] | np.ndarray]) -> tuple[float, float, float]:
    """P(X > Y) over tasks (each task's X runs against its Y runs) and its stratified bootstrap 95 % CI; NaN
    when a task has fewer than two runs of either method (one seed against one seed is a single draw, not a
    probability)."""
    xs, ys = _arrays(x_strata), _arrays(y_strata)
    if len(xs) != len(ys):
        raise ValueError(f"probability of improvement needs the same tasks for both methods ({len(xs)} vs {len(ys)})")
    if not xs or any(a.size < 2 for a in (*xs, *ys)):
        return math.nan, math.nan, math.nan
    samples = [a for pair in zip(xs, ys, strict=True) for a in pair]
    point = float(_improvement_statistic(*(s[np.newaxis] for s in samples))[0])
    return (point, *_bootstrap(samples, _improvement_statistic))


def compare_seeds(a: dict[int, float], b: dict[int, float]) -> tuple[float, str]:
    """Two-sided p-value of method ``a`` against method ``b`` from their per-seed scores (seed -> score) and
    the test used: ``paired`` (t-test over the same >= 2 seeds), ``welch`` (>= 2 seeds each, other seeds),
    or ``""`` with NaN when either has one seed (a single run's test sessions say nothing of seeds)."""
    if len(a) < 2 or len(b) < 2:
        return math.nan, ""
    with warnings.catch_warnings():  # identical constant samples: NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        if set(a) == set(b):
            seeds = sorted(a)
            diff = np.array([a[s] - b[s] for s in seeds])
            if np.all(diff == 0):
                return 1.0, "paired"
            return float(stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue), "paired"
        return float(stats.ttest_ind(list(a.values()), list(b.values()), equal_var=False).pvalue), "welch"


def performance_profile(strata: Sequence[Sequence[float] | np.ndarray], taus: np.ndarray) -> np.ndarray:
    """Fraction of runs scoring above each threshold ``tau``, averaged over tasks (rliable's
    ``create_performance_profile``: each task weighs the same whatever its number of runs)."""
    samples = _arrays(strata)
    if not samples:
        return np.full(len(taus), math.nan)
    return np.mean([(s[:, None] > np.asarray(taus)[None, :]).mean(axis=0) for s in samples], axis=0)
