"""Reference behaviour of the spec (../shared/spec/topicrec.md, "Reference behaviour"), on the
paper's own item tables (../shared/data/gems_paper; the tests skip when they are absent).

Tolerances. Each estimate is the mean return of N = 1000 sessions (users 0..999 of seed
``SEED``), with standard error SE = s / sqrt(N) (about 0.22 for random, 1.1-1.4 for the
oracle, 0.6 for eps-greedy). A band test passes when the interval mean +- 3.3 SE intersects
the target band: a simulator whose true mean lies in the band fails with probability below
0.1% (3.3 is the two-sided 99.9% normal quantile), while a systematic deviation larger than
3.3 SE (about 0.7 clicks for random, 4.5 for the oracle) beyond the band is caught. A
comparison "a < b" requires mean_b - mean_a > 3.3 * sqrt(SE_a^2 + SE_b^2).

Bands, from the spec ("a re-implementation should land within a few percent"):

* random slates, "about 33 on every environment": 33 +- 5% = [31.35, 34.65]. Measured here
  (seeds 0-2): 33.3-34.4 without penalty, 31.2-32.2 on the divpen environments, whose
  random slates are sometimes penalised (>= 4 items of one topic among 10 random items);
* short-term oracle on focused_topdown, "about 100-108" (the paper reports 107.7):
  [100, 110]. Measured here: 105-109;
* eps-greedy oracle (epsilon 0.5): strictly between random and the oracle on
  focused_topdown (measured 101 vs 106-109); on every environment clearly above random and
  not above the oracle (on the diffuse environments the two are within 1-2 clicks: random
  items relieve boredom about as much as they cost);
* divpen: the oracle's slates are often single-topic and penalised, so its return is lower
  than on focused_mix (measured 82 vs 106).

The seed is fixed, so the tests are deterministic; the bands were not tuned to it.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest

from slate_rl.sim.config import PRESETS
from slate_rl.sim.gym_env import build_simulator
from slate_rl.sim.policies import make_policy
from slate_rl.sim.rollout import run_sessions

pytestmark = pytest.mark.usefixtures("single_thread")

N_SESSIONS = 1000
SEED = 0
Z = 3.3
ENVS = list(PRESETS)
RANDOM_BAND = (33 * 0.95, 33 * 1.05)
ORACLE_FOCUSED_TOPDOWN_BAND = (100.0, 110.0)


@pytest.fixture(scope="module")
def evaluate(paper_tables: dict[str, np.ndarray]):
    """(env, policy) -> (mean return, standard error) over N_SESSIONS sessions, cached."""

    @cache
    def run(env: str, policy: str) -> tuple[float, float]:
        cfg_kind = PRESETS[env]["embeddings"]
        sim = build_simulator(env, paper_tables[cfg_kind], device="cpu")
        out = run_sessions(sim, make_policy(policy, 1000, 10, 0.5), N_SESSIONS, SEED, batch_size=N_SESSIONS)
        r = out.returns
        assert r.shape == (N_SESSIONS,) and r.min() >= 0 and r.max() <= 1000
        return float(r.mean()), float(r.std(ddof=1) / math.sqrt(N_SESSIONS))

    return run


def _in_band(mean: float, se: float, band: tuple[float, float]) -> bool:
    return mean + Z * se >= band[0] and mean - Z * se <= band[1]


def _less(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return b[0] - a[0] > Z * math.hypot(a[1], b[1])


@pytest.mark.parametrize("env", ENVS)
def test_random_policy_about_33(evaluate, env: str) -> None:
    mean, se = evaluate(env, "random")
    assert _in_band(mean, se, RANDOM_BAND), f"{env}: random return {mean:.2f} +- {se:.2f}, expected about 33"


def test_oracle_on_focused_topdown(evaluate) -> None:
    mean, se = evaluate("focused_topdown", "oracle")
    assert _in_band(mean, se, ORACLE_FOCUSED_TOPDOWN_BAND), f"oracle return {mean:.2f} +- {se:.2f}"


def test_eps_greedy_between_random_and_oracle_on_focused_topdown(evaluate) -> None:
    rnd, eps, orc = (evaluate("focused_topdown", p) for p in ("random", "eps-greedy", "oracle"))
    assert _less(rnd, eps) and _less(eps, orc), (rnd, eps, orc)


@pytest.mark.parametrize("env", ENVS)
def test_eps_greedy_above_random_not_above_oracle(evaluate, env: str) -> None:
    rnd, eps, orc = (evaluate(env, p) for p in ("random", "eps-greedy", "oracle"))
    assert _less(rnd, eps), (env, rnd, eps)
    assert not _less(orc, eps), (env, eps, orc)


@pytest.mark.parametrize("kind", ["focused", "diffuse"])
def test_divpen_oracle_below_mix_oracle(evaluate, kind: str) -> None:
    """Same click model (mixPBM), same users: only the diversity penalty differs."""
    assert _less(evaluate(f"{kind}_divpen", "oracle"), evaluate(f"{kind}_mix", "oracle"))
