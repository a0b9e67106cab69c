"""Summary statistics shared by every stage that reports a return."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats


def mean_ci(values: np.ndarray | list[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample standard deviation and the half-width of a Student-t confidence interval."""
    x = np.asarray(values, dtype=np.float64).ravel()
    n = int(x.size)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "ci": math.nan, "n": 0}
    mean = float(x.mean())
    if n == 1:
        return {"mean": mean, "std": 0.0, "ci": math.nan, "n": 1}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1) * std / math.sqrt(n))
    return {"mean": mean, "std": std, "ci": half, "n": n}


def curve_band(curves: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steps, mean and 95% CI half-width (NaN where one seed has the step) of (step, value) curves."""
    by_step: dict[float, list[float]] = {}
    for curve in curves:
        for step, value in curve:
            by_step.setdefault(float(step), []).append(float(value))
    steps = np.array(sorted(by_step), dtype=np.float64)
    summaries = [mean_ci(by_step[s]) for s in steps]
    return steps, np.array([s["mean"] for s in summaries]), np.array([s["ci"] for s in summaries])
