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
