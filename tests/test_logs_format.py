"""Logged-session files: round trip, compact dtypes, and one clear error per corruption."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slate_rl.core.errors import ArtifactError
from slate_rl.core.io import save_npz
from slate_rl.data.logs import LoggedSessions, load_logs, save_logs
from slate_rl.sim.policies import EpsilonGreedyOracle
from slate_rl.sim.protocol import make_simulator
from slate_rl.sim.rollout import run_sessions


@pytest.fixture(scope="module")
def logs() -> LoggedSessions:
    sim = make_simulator("focused_mix")
    out = run_sessions(sim, EpsilonGreedyOracle(1000, 10, 0.5), 20, seed=3, batch_size=8, record=True)
    return LoggedSessions(out.slates, out.clicks, out.reset_slates, out.reset_clicks,
                          out.returns.astype(np.float32), {"env": "focused_mix", "env_config": {"num_items": 1000}})


def test_round_trip_keeps_values_and_compact_dtypes(tmp_path, logs):
    path = tmp_path / "logs.npz"
    save_logs(path, logs)
    back = load_logs(path)
    for key in ("slates", "clicks", "reset_slates", "reset_clicks", "returns"):
        assert np.array_equal(getattr(back, key), getattr(logs, key))
    assert back.slates.dtype == np.int16 and back.clicks.dtype == np.bool_
    assert back.metadata["env"] == "focused_mix" and back.metadata["format_version"] == 1
    assert np.array_equal(back.returns, back.clicks.sum(axis=(1, 2)))
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_recorded_history_is_batch_size_invariant(logs):
    sim = make_simulator("focused_mix")
    other = run_sessions(sim, EpsilonGreedyOracle(1000, 10, 0.5), 20, seed=3, batch_size=20, record=True)
    assert np.array_equal(other.slates, logs.slates) and np.array_equal(other.clicks, logs.clicks)


def _write(path, logs, **changes):
    arrays = {
        "slates": logs.slates, "clicks": logs.clicks, "reset_slates": logs.reset_slates,
        "reset_clicks": logs.reset_clicks, "returns": logs.returns,
        "metadata": np.array(json.dumps({"format_version": 1, **logs.metadata})),
    }
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    save_npz(path, arrays)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"clicks": None}, "missing array 'clicks'"),
        ({"slates": "int64"}, "field 'slates' has dtype int64"),
        ({"reset_slates": "short"}, "field 'reset_slates' has shape"),
        ({"metadata": np.array(json.dumps({"format_version": 99}))}, "format_version"),
        ({"metadata": np.array("{not json")}, "not valid JSON"),
        ({"slates": "out_of_range"}, "item ids outside"),
    ],
)
def test_corruptions_are_rejected_with_the_field_named(tmp_path, logs, change, message):
    key, value = next(iter(change.items()))
    if isinstance(value, str):
        arr = getattr(logs, key)
        if value == "int64":
            value = arr.astype(np.int64)
        elif value == "short":
            value = arr[:-1]
        else:
            value = arr.copy()
            value[0, 0, 0] = 5000
    path = tmp_path / "bad.npz"
    _write(path, logs, **{key: value})
    with pytest.raises(ArtifactError, match=message) as info:
        load_logs(path, num_items=1000)
    assert str(path) in str(info.value)


def test_not_an_npz_and_missing_file(tmp_path):
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="not a readable .npz"):
        load_logs(bad)
    with pytest.raises(ArtifactError, match="file not found"):
        load_logs(tmp_path / "missing.npz")
