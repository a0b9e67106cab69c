"""Offline datasets: collection, the D4RL-layout validator, relabelling, mixtures, Minari/d3rlpy
export and the ``slate-rl collect`` stage, on a tiny TopicRec (100 items, 10-step sessions)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from slate_rl.cli import main
from slate_rl.core.config import to_dict
from slate_rl.core.errors import ArtifactError, ConfigError
from slate_rl.core.io import file_sha256
from slate_rl.core.stats import mean_ci
from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.data.d4rl import (
    ARRAYS,
    FORMAT,
    REQUIRED_METADATA,
    VERSION,
    build_arrays,
    load_dataset,
    metadata_path,
    save_dataset,
    validate_arrays,
)
from slate_rl.data.export import from_minari, to_d3rlpy, to_minari
from slate_rl.models.gems import GeMS, gems_loss
from slate_rl.models.rankers import GeMSRanker, load_gems_ranker, save_gems_ranker
from slate_rl.offline.config import OfflineDataConfig
from slate_rl.offline.datasets import (
    NoisyPolicy,
    StepMixPolicy,
    UniformPolicy,
    check_label,
    check_spread,
    collect_episodes,
    encode_beliefs,
    mix_datasets,
    mixture_counts,
    quality_seed,
    relabel_actions,
)
from slate_rl.online.base import Agent
from slate_rl.online.loop import OnlineConfig, train_online
from slate_rl.online.registry import build_agent, load_agent, save_agent
from slate_rl.online.rollouts import policy_returns
from slate_rl.online.sac import SACConfig
from slate_rl.sim.config import make_env_config
from slate_rl.sim.core import TopicRec
from slate_rl.sim.embeddings import generate_item_embeddings

NUM_ITEMS, K, S, A = 100, 10, 20, 4  # items, slate size, belief size, GeMS latent size
HORIZON = 10  # episode length of the tiny simulator
TAG = "sac_gems_d4_beta1_lc0.5_scratch_s1"
CENTER = np.array([0.25, -0.5, 0.0, 1.0], dtype=np.float32)
SCALE = np.array([1.0, 0.5, 2.0, 1.5], dtype=np.float32)
ENV_SPEC = {"base": "focused_topdown", "num_items": NUM_ITEMS, "episode_length": HORIZON}


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    return generate_item_embeddings("focused", 5, NUM_ITEMS)


@pytest.fixture(scope="module")
def tiny_sim(table) -> TopicRec:
    cfg = make_env_config("focused_topdown", num_items=NUM_ITEMS, episode_length=HORIZON)
    return TopicRec(cfg, torch.from_numpy(table), "cpu")


def _gems(seed: int = 0) -> GeMSRanker:
    torch.manual_seed(seed)
    model = GeMS(num_items=NUM_ITEMS, latent_dim=A, encoder_hidden=(32,), decoder_hidden=(32,))
    return GeMSRanker(model, torch.from_numpy(CENTER), torch.from_numpy(SCALE))


def _agent(sim: TopicRec, gems: GeMSRanker, seed: int = 0):
    torch.manual_seed(seed)
    return build_agent(TAG, sim.items, NUM_ITEMS, K, HORIZON, gems=gems, config=SACConfig(hidden=32),
                       belief_table="ranker")


@pytest.fixture(scope="module")
def agent(tiny_sim):
    """An untrained SAC+GeMS agent (its policy is a non-trivial function of the belief)."""
    return _agent(tiny_sim, _gems())


def _collect(sim, policy, encoder, seed, episodes, mode, batch_size=4096):
    return collect_episodes(sim, policy, encoder, seed, episodes, mode, batch_size, progress=False)


def _meta(arrays: dict[str, np.ndarray], **overrides: Any) -> dict[str, Any]:
    e = arrays["reset_slates"].shape[0]
    return {
        "env": "tiny", "quality": "expert", "episodes": e, "episode_length": arrays["timesteps"].shape[0] // e,
        "slate_size": K, "num_items": NUM_ITEMS, "obs_dim": S, "action_dim": A,
        "action_center": CENTER.tolist(), "action_scale": SCALE.tolist(), "gems_sha256": "gems0",
        "behaviour": {"agent": TAG}, "behaviour_return": {"mean": 1.0, "ci95": 0.5},
        "state_encoder": {"checkpoint": "best.ckpt", "sha256": "enc0"}, "seed": 0, **overrides,
    }


def _per_episode(arrays: dict[str, np.ndarray], key: str) -> np.ndarray:
    e = arrays["reset_slates"].shape[0]
    return arrays[key].reshape(e, arrays["timesteps"].shape[0] // e, *arrays[key].shape[1:])


# Synthetic valid arrays (built once): E_SYN episodes of H_SYN steps.
E_SYN, H_SYN = 4, 5
N_SYN = E_SYN * H_SYN


def _synthetic(seed: int = 0, episodes: int = E_SYN) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    clicks = rng.random((episodes, H_SYN + 1, K)) < 0.3
    raw = {
        "slates": rng.integers(0, NUM_ITEMS, (episodes, H_SYN + 1, K)),
        "clicks": clicks,
        "actions": CENTER + SCALE * rng.uniform(-1.0, 1.0, (episodes, H_SYN, A)),
        "rewards": clicks[:, 1:].sum(-1),
        "beliefs": rng.standard_normal((episodes, H_SYN + 1, S)),
    }
    return raw, build_arrays(**raw)


RAW, VALID = _synthetic()
FULL_META = {"format": FORMAT, "version": VERSION, **_meta(VALID)}
ROW_T = np.tile(np.arange(H_SYN), E_SYN)  # timestep of each row of VALID


def _write_raw(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write a dataset without validation (how a corrupted file reaches a consumer)."""
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    metadata_path(path).write_text(json.dumps(meta))


def _save_valid(path: Path, seed: int = 0, episodes: int = E_SYN, **meta: Any) -> dict[str, np.ndarray]:
    _, arrays = _synthetic(seed, episodes)
    save_dataset(path, arrays, _meta(arrays, **meta))
    return arrays


# --------------------------------------------------------------------------- 1. collection mechanics


def test_collected_episodes_follow_the_d4rl_layout(tiny_sim, agent):
    e, h = 24, HORIZON
    arrays = _collect(tiny_sim, agent, agent.actor_belief, 11, e, "train")
    validate_arrays(arrays, {"format": FORMAT, "version": VERSION, **_meta(arrays)}, Path("collected.npz"))
    obs, nxt = _per_episode(arrays, "observations"), _per_episode(arrays, "next_observations")
    assert np.array_equal(nxt[:, :-1], obs[:, 1:])
    assert not np.allclose(obs[:, 1:], obs[:, :-1])  # the belief moves: the alignment check is not vacuous
    timeouts = _per_episode(arrays, "timeouts")
    assert timeouts[:, -1].all() and not timeouts[:, :-1].any() and not arrays["terminals"].any()
    assert np.array_equal(arrays["rewards"], arrays["clicks"].sum(axis=1).astype(np.float32))
    assert arrays["rewards"].sum() > 0
    assert np.array_equal(arrays["episode_ids"], np.repeat(np.arange(e), h))
    assert np.array_equal(arrays["timesteps"], np.tile(np.arange(h), e))
    assert np.array_equal(arrays["reset_slates"], np.broadcast_to(tiny_sim.initial_slate.numpy(), (e, K)))
    # the stored action is the executed one: it decodes to the slate shown at that step
    actions, slates = _per_episode(arrays, "actions"), _per_episode(arrays, "slates")
    for t in range(h):
        decoded = agent.ranker.rank(torch.from_numpy(np.ascontiguousarray(actions[:, t])))
        assert np.array_equal(decoded.numpy(), slates[:, t])


class _BeliefRecorder(Agent):
    """Wraps an agent and records the belief its ``act`` computes at each step."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner, self.action_dim, self.beliefs = inner, inner.action_dim, []

    def act(self, slates, clicks, hidden, deterministic=False, privileged=None):
        slate, action, belief = self.inner.act(slates, clicks, hidden, deterministic, privileged)
        self.beliefs.append(belief.clone())
        return slate, action, belief


def test_observations_are_the_behaviour_agents_own_beliefs(tiny_sim, agent):
    rec = _BeliefRecorder(agent)
    arrays = _collect(tiny_sim, rec, agent.actor_belief, 12, 16, "train")
    obs = _per_episode(arrays, "observations")
    assert len(rec.beliefs) == HORIZON
    for t, belief in enumerate(rec.beliefs):  # the belief the agent acted from at step t
        np.testing.assert_allclose(obs[:, t], belief.numpy(), rtol=0, atol=1e-5)
    # the last next-observation is the belief after the final observation
    with torch.no_grad():
        last = agent.actor_belief.step(torch.from_numpy(arrays["slates"][HORIZON - 1::HORIZON]).long(),
                                       torch.from_numpy(arrays["clicks"][HORIZON - 1::HORIZON]), rec.beliefs[-1])
    np.testing.assert_allclose(_per_episode(arrays, "next_observations")[:, -1], last.numpy(), rtol=0, atol=1e-5)


def test_random_mode_draws_uniform_actions_inside_the_bounds(tiny_sim, agent):
    arrays = _collect(tiny_sim, agent, agent.actor_belief, 13, 300, "random")
    u = (arrays["actions"] - CENTER) / SCALE
    assert (np.abs(u) <= 1 + 1e-6).all()
    for d in range(A):
        assert stats.kstest(u[:, d], "uniform", args=(-1.0, 2.0)).pvalue > 1e-3, d
    quarters = np.histogram(u, bins=4, range=(-1.0, 1.0))[0] / u.size
    np.testing.assert_allclose(quarters, 0.25, atol=0.02)
    # states are still the expert encoder's beliefs of the random episodes
    ep_slates = np.concatenate([arrays["reset_slates"][:, None], _per_episode(arrays, "slates")], axis=1)
    ep_clicks = np.concatenate([arrays["reset_clicks"][:, None], _per_episode(arrays, "clicks")], axis=1)
    beliefs = encode_beliefs(agent.actor_belief, torch.from_numpy(ep_slates).long(), torch.from_numpy(ep_clicks))
    np.testing.assert_allclose(_per_episode(arrays, "observations"), beliefs[:, :-1].numpy(), rtol=0, atol=1e-6)


def test_exploration_noise_changes_actions_but_keeps_them_inside_the_bounds(tiny_sim, agent):
    plain = _collect(tiny_sim, agent, agent.actor_belief, 14, 200, "eval")
    zero = _collect(tiny_sim, NoisyPolicy(agent, 0.0), agent.actor_belief, 14, 200, "eval")
    for key in ARRAYS:
        assert np.array_equal(plain[key], zero[key]), key
    noisy = _collect(tiny_sim, NoisyPolicy(agent, 0.3), agent.actor_belief, 14, 200, "eval")
    assert not np.allclose(noisy["actions"], plain["actions"])
    assert (np.abs(noisy["actions"] - CENTER) <= SCALE + 1e-6).all()
    # at t = 0 both see the reset observation: the difference is the noise, std 0.3 x scale
    first = slice(0, None, HORIZON)
    z = (noisy["actions"][first] - plain["actions"][first]) / SCALE
    assert 0.25 < z.std() < 0.35 and abs(z.mean()) < 0.05
    # the noisy action is the executed one
    actions, slates = _per_episode(noisy, "actions"), _per_episode(noisy, "slates")
    for t in range(HORIZON):
        decoded = agent.ranker.rank(torch.from_numpy(np.ascontiguousarray(actions[:, t])))
        assert np.array_equal(decoded.numpy(), slates[:, t])
    # huge noise is clipped onto the bounds, never beyond
    wild = _collect(tiny_sim, NoisyPolicy(agent, 5.0), agent.actor_belief, 14, 50, "train")
    dist = np.abs(wild["actions"] - CENTER)
    assert (dist <= SCALE + 1e-6).all() and np.isclose(dist, SCALE, rtol=0, atol=1e-6).mean() > 0.5


def test_collection_is_seeded(tiny_sim, agent):
    a = _collect(tiny_sim, agent, agent.actor_belief, 15, 20, "train")
    b = _collect(tiny_sim, agent, agent.actor_belief, 15, 20, "train")
    c = _collect(tiny_sim, agent, agent.actor_belief, 16, 20, "train")
    for key in ARRAYS:
        assert np.array_equal(a[key], b[key]), key
    assert not np.array_equal(a["clicks"], c["clicks"]) and not np.allclose(a["actions"], c["actions"])


def test_user_sessions_do_not_depend_on_the_batch_size(tiny_sim, agent):
    small = _collect(tiny_sim, agent, agent.actor_belief, 17, 30, "eval", batch_size=7)
    large = _collect(tiny_sim, agent, agent.actor_belief, 17, 30, "eval", batch_size=4096)
    for key in ARRAYS:
        if small[key].dtype == np.float32:  # batched matmuls may differ in the last bit
            np.testing.assert_allclose(small[key], large[key], rtol=0, atol=1e-5, err_msg=key)
        else:
            assert np.array_equal(small[key], large[key]), key
    # sampled actions come from the global generator, but the users (their first clicks) stay the same
    small = _collect(tiny_sim, agent, agent.actor_belief, 17, 30, "train", batch_size=7)
    assert np.array_equal(small["reset_clicks"], large["reset_clicks"])


# --------------------------------------------------------------------------- 2. dataset return = behaviour return


class _SameSlate(Agent):
    """Shows one fixed slate at every step, whatever the mode (users get bored of it)."""

    action_dim = A

    def __init__(self, slate: torch.Tensor) -> None:
        super().__init__()
        self.slate = slate

    def act(self, slates, clicks, hidden, deterministic=False, privileged=None):
        return self.slate.expand(slates.shape[0], -1), torch.zeros(slates.shape[0], A), hidden

    def random_act(self, slates, clicks, hidden, width=1.0):
        return self.act(slates, clicks, hidden)


def _agree(dataset_returns: np.ndarray, online: np.ndarray) -> tuple[float, float]:
    a, b = mean_ci(dataset_returns), mean_ci(online)
    return abs(a["mean"] - b["mean"]), float(np.hypot(a["ci"], b["ci"]))


@pytest.mark.parametrize("mode", ["train", "eval", "random"])
def test_dataset_return_matches_the_online_behaviour_return(tiny_sim, agent, mode):
    arrays = _collect(tiny_sim, agent, agent.actor_belief, 101, 1000, mode)
    data = _per_episode(arrays, "rewards").sum(axis=1, dtype=np.float64)
    online = policy_returns(tiny_sim, agent, 202, 1000, mode).numpy()
    gap, ci = _agree(data, online)
    assert gap <= ci, f"{mode}: dataset {data.mean():.3f} vs online {online.mean():.3f} (combined CI {ci:.3f})"
    # the comparison has power: a behaviour that differs (one slate shown again and again) is told apart
    gap, ci = _agree(data, policy_returns(tiny_sim, _SameSlate(tiny_sim.initial_slate), 202, 1000, mode).numpy())
    assert gap > ci


# --------------------------------------------------------------------------- 3. the validator


def test_valid_dataset_round_trips_bit_identically(tmp_path):
    path = tmp_path / "expert.npz"
    save_dataset(path, VALID, _meta(VALID))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["expert.json", "expert.npz"]
    ds = load_dataset(path, expect_gems_sha256="gems0", expect_env="tiny")
    assert set(ds.arrays) == set(ARRAYS)
    for key, arr in VALID.items():
        assert ds.arrays[key].dtype == arr.dtype and ds.arrays[key].shape == arr.shape, key
        assert ds.arrays[key].tobytes() == arr.tobytes(), key
    assert ds.metadata == FULL_META and len(ds) == N_SYN and ds.horizon == H_SYN
    np.testing.assert_array_equal(ds.episode_returns(), RAW["rewards"].sum(axis=1))


def test_episodes_and_buffer_reproduce_the_replay_layout(tmp_path):
    path = tmp_path / "expert.npz"
    save_dataset(path, VALID, _meta(VALID))
    ds = load_dataset(path)
    ep = ds.episodes()
    assert np.array_equal(ep["slates"], RAW["slates"]) and np.array_equal(ep["clicks"], RAW["clicks"])
    assert np.array_equal(ep["actions"], RAW["actions"].astype(np.float32))
    assert np.array_equal(ep["rewards"], RAW["rewards"].astype(np.float32))
    assert np.array_equal(ep["observations"], RAW["beliefs"].astype(np.float32))
    assert build_arrays(ep["slates"], ep["clicks"], ep["actions"], ep["rewards"], ep["observations"]).keys() == \
        VALID.keys()
    buf = ds.to_buffer()
    assert isinstance(buf, EpisodeBuffer) and len(buf) == E_SYN and buf.horizon == H_SYN
    stored = buf.episodes()
    for key in ("slates", "clicks", "actions", "rewards"):
        assert np.array_equal(stored[key].numpy(), ep[key]), key
    a = ds.arrays
    tr = buf.sample_transitions(256, torch.Generator().manual_seed(0))
    ep_idx, t = tr["episode_index"].numpy(), tr["timesteps"].numpy()
    row = ep_idx * H_SYN + t
    assert len(set(row.tolist())) == N_SYN  # every transition was drawn
    assert np.array_equal(tr["observations"].numpy(), a["observations"][row])
    assert np.array_equal(tr["next_observations"].numpy(), a["next_observations"][row])
    assert np.array_equal(tr["actions"].numpy(), a["actions"][row])
    assert np.array_equal(tr["rewards"].numpy(), a["rewards"][row])
    assert np.array_equal(tr["next_slates"].numpy(), a["slates"][row])
    assert np.array_equal(tr["next_clicks"].numpy(), a["clicks"][row])
    before = np.where((t == 0)[:, None], a["reset_slates"][ep_idx], a["slates"][np.maximum(row - 1, 0)])
    assert np.array_equal(tr["slates"].numpy(), before)
    inner = t < H_SYN - 1  # next_observation of (ep, t) is the observation of (ep, t + 1)
    assert np.array_equal(tr["next_observations"].numpy()[inner], a["observations"][row[inner] + 1])
    relabelled = np.arange(N_SYN * 3, dtype=np.float32).reshape(N_SYN, 3)
    other = ds.to_buffer(actions=relabelled)
    assert np.array_equal(other.episodes()["actions"].numpy().reshape(N_SYN, 3), relabelled)


def _drop(key):
    return lambda a, m: a.pop(key)


def _astype(key, dtype):
    return lambda a, m: a.__setitem__(key, a[key].astype(dtype))


def _apply(key, fn):
    return lambda a, m: a.__setitem__(key, fn(a[key]))


def _set(key, index, value):
    return lambda a, m: a[key].__setitem__(index, value)


def _meta_set(field, value):
    return lambda a, m: m.__setitem__(field, value)


NPZ, JSON = "npz", "json"
CORRUPTIONS = [
    ("missing key", _drop("clicks"), NPZ, "clicks"),
    ("missing reset key", _drop("reset_slates"), NPZ, "reset_slates"),
    ("dtype float64", _astype("observations", np.float64), NPZ, "observations"),
    ("dtype int32 slates", _astype("slates", np.int32), NPZ, "slates"),
    ("dtype uint8 terminals", _astype("terminals", np.uint8), NPZ, "terminals"),
    ("shape rows", _apply("actions", lambda x: x[:-1]), NPZ, "actions"),
    ("shape columns", _apply("next_observations", lambda x: x[:, :-1]), NPZ, "next_observations"),
    ("shape reset rows", _apply("reset_clicks", lambda x: x[:-1]), NPZ, "reset_clicks"),
    ("nan observation", _set("observations", (3, 2), np.nan), NPZ, "observations"),
    ("inf observation", _set("observations", (0, 0), np.inf), NPZ, "observations"),
    ("nan action", _set("actions", (7, 1), np.nan), NPZ, "actions"),
    ("nan reward", _set("rewards", 2, np.nan), NPZ, "rewards"),
    ("misaligned next_observations", _set("next_observations", (1, 0), 9.0), NPZ, "next_observations"),
    ("misaligned observations", _set("observations", (H_SYN + 2, 5), -9.0), NPZ, "next_observations"),
    ("misaligned last inner step", _set("next_observations", (H_SYN - 2, 3), 0.5), NPZ, "next_observations"),
    ("misaligned last observation", _set("observations", (2 * H_SYN - 1, 0), 0.5), NPZ, "next_observations"),
    ("timeout missing", _set("timeouts", H_SYN - 1, False), NPZ, "timeouts"),
    ("timeout early", _set("timeouts", 0, True), NPZ, "timeouts"),
    ("terminal", _set("terminals", 2 * H_SYN - 1, True), NPZ, "terminals"),
    ("rewards != clicks", _apply("rewards", lambda x: x + (np.arange(N_SYN) == 3)), NPZ, "rewards"),
    ("click flipped", _apply("clicks", lambda x: x ^ (np.arange(x.size) == 4).reshape(x.shape)), NPZ, "rewards"),
    ("episode ids", _set("episode_ids", H_SYN, 0), NPZ, "episode_ids"),
    ("episodes reordered", _apply("episode_ids", lambda x: x[::-1].copy()), NPZ, "episode_ids"),
    ("timesteps", _set("timesteps", 2, 3), NPZ, "timesteps"),
    ("item id too large", _set("slates", (0, 0), NUM_ITEMS), NPZ, "slates"),
    ("item id negative", _set("slates", (5, 9), -1), NPZ, "slates"),
    ("reset item id", _set("reset_slates", (1, 3), NUM_ITEMS + 7), NPZ, "reset_slates"),
    ("action above", _set("actions", (5, 1), CENTER[1] + 1.01 * SCALE[1]), NPZ, "actions"),
    ("action below", _set("actions", (0, 3), CENTER[3] - 1.01 * SCALE[3]), NPZ, "actions"),
    ("version", _meta_set("version", VERSION + 1), JSON, "version"),
    ("format", _meta_set("format", "d4rl"), JSON, "format"),
    ("episodes not an integer", _meta_set("episodes", "four"), JSON, "episodes"),
    ("num_items not an integer", _meta_set("num_items", "many"), JSON, "num_items"),
    ("bounds of other length", _meta_set("action_scale", [1.0]), JSON, "action_center"),
    ("bounds not numbers", _meta_set("action_center", ["a", 0, 0, 0]), JSON, "action_center"),
    ("episodes mismatch", _meta_set("episodes", E_SYN + 1), NPZ, "observations"),
    ("num_items too small", _meta_set("num_items", int(VALID["slates"].max())), NPZ, "slates"),
]


def _corrupted(tmp_path, mutate) -> Path:
    arrays = {k: v.copy() for k, v in VALID.items()}
    meta = copy.deepcopy(FULL_META)
    mutate(arrays, meta)
    path = tmp_path / "broken.npz"
    _write_raw(path, arrays, meta)
    return path


@pytest.mark.parametrize(("mutate", "where", "field"), [c[1:] for c in CORRUPTIONS], ids=[c[0] for c in CORRUPTIONS])
def test_every_corruption_is_refused_naming_file_and_field(tmp_path, mutate, where, field):
    path = _corrupted(tmp_path, mutate)
    with pytest.raises(ArtifactError) as info:
        load_dataset(path)
    msg = str(info.value)
    named = path if where == NPZ else metadata_path(path)
    assert msg.startswith(f"{named}:") and f"'{field}'" in msg, msg


@pytest.mark.parametrize("field", REQUIRED_METADATA)
def test_missing_metadata_field_is_refused(tmp_path, field):
    path = _corrupted(tmp_path, lambda a, m: m.pop(field))
    with pytest.raises(ArtifactError, match=f"field '{field}' is missing") as info:
        load_dataset(path)
    assert str(info.value).startswith(f"{metadata_path(path)}:")


def test_missing_or_unreadable_files_are_refused(tmp_path):
    path = tmp_path / "expert.npz"
    with pytest.raises(ArtifactError, match="no such dataset") as info:
        load_dataset(path)
    assert str(path) in str(info.value)
    save_dataset(path, VALID, _meta(VALID))
    good = path.read_bytes()
    metadata_path(path).rename(tmp_path / "elsewhere.json")
    with pytest.raises(ArtifactError, match="metadata file missing") as info:
        load_dataset(path)
    assert str(info.value).startswith(f"{metadata_path(path)}:")
    metadata_path(path).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_dataset(path)
    metadata_path(path).write_text("[1, 2]")
    with pytest.raises(ArtifactError, match="JSON object"):
        load_dataset(path)
    (tmp_path / "elsewhere.json").replace(metadata_path(path))
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF  # a damaged byte inside an array: CRC or header failure
    one_array = tmp_path / "one.npy"
    np.save(one_array, VALID["observations"])
    for broken in (good[: len(good) // 2], good[:10], b"", b"garbage" * 50, bytes(flipped), one_array.read_bytes()):
        path.write_bytes(broken)
        with pytest.raises(ArtifactError) as info:
            load_dataset(path)
        assert str(info.value).startswith(f"{path}:"), info.value


def test_gems_hash_and_env_mismatch_are_refused(tmp_path):
    path = tmp_path / "expert.npz"
    save_dataset(path, VALID, _meta(VALID))
    load_dataset(path, expect_gems_sha256="gems0", expect_env="tiny")
    with pytest.raises(ArtifactError, match="field 'gems_sha256'") as info:
        load_dataset(path, expect_gems_sha256="0123456789abcdef")
    assert str(info.value).startswith(f"{metadata_path(path)}:")
    with pytest.raises(ArtifactError, match="field 'env'") as info:
        load_dataset(path, expect_env="focused_mix")
    assert str(info.value).startswith(f"{metadata_path(path)}:")


# Random corruptions: each draw breaks the valid dataset in one way that no valid dataset allows.
DTYPES = [np.dtype(t) for t in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
                                np.uint8, np.bool_)]
VALUE_KEYS = ("observations", "next_observations", "actions", "rewards", "terminals", "timeouts", "clicks",
              "slates", "reset_slates", "episode_ids", "timesteps")
FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
NONFINITE = st.sampled_from([np.nan, np.inf, -np.inf])
INT_RANGES = {"episode_ids": (-(2**31), 2**31 - 1), "timesteps": (-(2**15), 2**15 - 1)}


def _corrupt_value(draw, a: dict[str, np.ndarray], key: str) -> set[str]:
    x = a[key]
    i = draw(st.integers(0, x.shape[0] - 1))
    j = draw(st.integers(0, x.shape[1] - 1)) if x.ndim == 2 else None
    idx = (i, j) if j is not None else i
    if key in ("observations", "next_observations"):
        if draw(st.booleans()):
            x[idx] = draw(NONFINITE)
        else:  # a finite change where the alignment constrains the value
            rows = np.flatnonzero(ROW_T > 0 if key == "observations" else ROW_T < H_SYN - 1)
            idx = (draw(st.sampled_from(rows.tolist())), j)
            x[idx] = draw(FLOAT32.filter(lambda v: v != x[idx]))
        return {key, "next_observations"}
    if key == "actions":
        if draw(st.booleans()):
            x[idx] = draw(NONFINITE)
        else:
            sign = draw(st.sampled_from([-1.0, 1.0]))
            x[idx] = CENTER[j] + sign * SCALE[j] * (1.0 + draw(st.floats(0.01, 1e6)))
        return {key}
    if key == "rewards":
        x[idx] = draw(st.floats(width=32).filter(lambda v: v != x[idx]))
        return {key}
    if key == "terminals":
        x[idx] = True
        return {key}
    if key in ("timeouts", "clicks"):
        x[idx] = not x[idx]
        return {"rewards" if key == "clicks" else key}
    if key in ("slates", "reset_slates"):
        x[idx] = draw(st.integers(-(2**15), -1) | st.integers(NUM_ITEMS, 2**15 - 1))
        return {key}
    lo, hi = INT_RANGES[key]
    x[idx] = draw(st.integers(lo, hi).filter(lambda v: v != x[idx]))
    return {key}


def _corrupt_metadata(draw, a: dict[str, np.ndarray], m: dict[str, Any]) -> set[str] | None:
    op = draw(st.sampled_from(["drop", "format", "version", "size", "num_items", "bounds", "garbage"]))
    if op == "drop":
        field = draw(st.sampled_from(REQUIRED_METADATA))
        del m[field]
        return {field}
    if op == "format":
        m["format"] = draw(st.text(max_size=20).filter(lambda s: s != FORMAT))
        return {"format"}
    if op == "version":
        m["version"] = draw(st.integers(-5, 100).filter(lambda v: v != VERSION))
        return {"version"}
    if op == "size":  # any other size disagrees with some array (or is not positive)
        field = draw(st.sampled_from(["episodes", "episode_length", "slate_size", "obs_dim", "action_dim"]))
        m[field] = draw(st.integers(-3, 200).filter(lambda v: v != m[field]))
        return None
    if op == "garbage":  # a value of the wrong JSON type
        field = draw(st.sampled_from(["episodes", "episode_length", "slate_size", "obs_dim", "action_dim",
                                      "num_items", "action_center", "action_scale"]))
        m[field] = draw(st.none() | st.text("abc", min_size=1) | st.lists(st.text("xy"), min_size=1, max_size=A)
                        | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))
        return None
    if op == "num_items":  # at most the largest stored id
        m["num_items"] = draw(st.integers(-3, int(max(a["slates"].max(), a["reset_slates"].max()))))
        return {"slates", "reset_slates"}
    j = draw(st.integers(0, A - 1))  # bounds too narrow for a stored action
    widest = float(np.abs(a["actions"][:, j] - CENTER[j]).max())
    scale = list(m["action_scale"])
    scale[j] = widest * draw(st.floats(0.0, 0.9))
    m["action_scale"] = scale
    return {"actions"}


@st.composite
def corruptions(draw) -> tuple[dict[str, np.ndarray], dict[str, Any], set[str] | None]:
    """(arrays, metadata, fields the error may name) of the valid dataset broken in one random way."""
    a = {k: v.copy() for k, v in VALID.items()}
    m = copy.deepcopy(FULL_META)
    kind = draw(st.sampled_from(["drop", "dtype", "shape", "value", "metadata"]))
    if kind == "value":
        return a, m, _corrupt_value(draw, a, draw(st.sampled_from(VALUE_KEYS)))
    if kind == "metadata":
        return a, m, _corrupt_metadata(draw, a, m)
    key = draw(st.sampled_from(sorted(ARRAYS)))
    if kind == "drop":
        del a[key]
    elif kind == "dtype":
        a[key] = a[key].astype(draw(st.sampled_from([d for d in DTYPES if d != a[key].dtype])))
    else:
        x = a[key]
        op = draw(st.sampled_from(["fewer rows", "more rows", "other columns", "extra axis"]))
        if op == "fewer rows":
            x = x[: draw(st.integers(0, x.shape[0] - 1))]
        elif op == "more rows":
            x = np.concatenate([x, x[: draw(st.integers(1, x.shape[0]))]])
        elif op == "other columns":
            x = x[:, :-1] if x.ndim == 2 else x[:, None]
        else:
            x = x[None]
        a[key] = np.ascontiguousarray(x)
    return a, m, {key}


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=corruptions())
def test_random_corruptions_never_pass_validation(tmp_path, case):
    arrays, meta, fields = case
    path = tmp_path / "corrupt.npz"
    _write_raw(path, arrays, meta)
    with pytest.raises(ArtifactError) as info:
        load_dataset(path)
    msg = str(info.value)
    assert msg.startswith((f"{path}:", f"{metadata_path(path)}:")), msg
    if fields is not None:
        assert any(f"'{f}'" in msg for f in fields), (fields, msg)


# --------------------------------------------------------------------------- 4. atomic writes


def test_a_failing_save_leaves_no_file_behind(tmp_path, monkeypatch):
    broken = {**VALID, "terminals": np.ones(N_SYN, dtype=np.bool_)}
    with pytest.raises(ArtifactError, match="'terminals'"):
        save_dataset(tmp_path / "expert.npz", broken, _meta(VALID))
    assert list(tmp_path.iterdir()) == []
    # an existing dataset survives a failed overwrite unchanged
    path = tmp_path / "expert.npz"
    save_dataset(path, VALID, _meta(VALID))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ArtifactError):
        save_dataset(path, {k: v for k, v in VALID.items() if k != "rewards"}, _meta(VALID))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # a write that dies half way removes its temporary file and publishes nothing
    other = tmp_path / "other.npz"

    def dying_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", dying_savez)
    with pytest.raises(OSError, match="disk full"):
        save_dataset(other, VALID, _meta(VALID))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


# --------------------------------------------------------------------------- 5. relabelling


def _distinct_slates(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    slates = torch.stack([torch.randperm(NUM_ITEMS, generator=g)[:K] for _ in range(n)])
    return slates, torch.rand(n, K, generator=g) < 0.3


def test_relabel_is_the_batched_encoder_mean():
    ranker = _gems(seed=3)
    slates, clicks = _distinct_slates(50, seed=0)
    whole = relabel_actions(ranker, slates.numpy().astype(np.int16), clicks.numpy())
    assert whole.shape == (50, A) and whole.dtype == np.float32
    np.testing.assert_allclose(whole, ranker.encode(slates, clicks).numpy(), rtol=0, atol=1e-6)
    chunked = relabel_actions(ranker, slates.numpy().astype(np.int16), clicks.numpy(), batch=3)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-6)
    assert np.array_equal(relabel_actions(ranker, slates, clicks), whole)  # tensors too, deterministic
    assert relabel_actions(ranker, np.zeros((0, K), np.int16), np.zeros((0, K), bool)).shape == (0, A)
    other = relabel_actions(_gems(seed=4), slates, clicks)
    assert not np.allclose(other, whole)  # actions live in one GeMS's latent space


def test_decoding_relabelled_actions_recovers_the_slates():
    torch.manual_seed(0)
    slates, clicks = _distinct_slates(20, seed=1)
    model = GeMS(num_items=NUM_ITEMS, latent_dim=8, encoder_hidden=(64,), decoder_hidden=(64,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        loss, _ = gems_loss(model, slates, clicks, beta=0.01, lambda_click=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ranker = GeMSRanker(model, torch.zeros(8), torch.full((8,), 3.0))
    data_slates, data_clicks = slates.repeat(5, 1), clicks.repeat(5, 1)  # logged data: the slates, repeated
    z = relabel_actions(ranker, data_slates.numpy().astype(np.int16), data_clicks.numpy(), batch=7)
    decoded = ranker.rank(torch.from_numpy(z))
    assert (decoded == data_slates).float().mean() >= 0.9
    untrained = GeMSRanker(GeMS(num_items=NUM_ITEMS, latent_dim=8, encoder_hidden=(64,), decoder_hidden=(64,)),
                           torch.zeros(8), torch.full((8,), 3.0))
    assert (untrained.rank(torch.from_numpy(z)) == data_slates).float().mean() < 0.2


# --------------------------------------------------------------------------- 6. mixtures


@settings(max_examples=200, deadline=None, derandomize=True)
@given(weights=st.dictionaries(st.text(min_size=1, max_size=4), st.floats(1e-3, 1e3), min_size=1, max_size=6),
       episodes=st.integers(0, 100_000))
def test_mixture_counts_split_episodes_in_proportion(weights, episodes):
    counts = mixture_counts(weights, episodes)
    assert counts.keys() == weights.keys() and sum(counts.values()) == episodes
    total = sum(weights.values())
    raw = {k: episodes * w / total for k, w in weights.items()}
    for k in weights:
        assert counts[k] >= 0 and abs(counts[k] - raw[k]) < 1.0, (k, counts, raw)
    for a in weights:
        for b in weights:
            if raw[a] > raw[b]:
                assert counts[a] >= counts[b]


def test_mixture_counts_refuse_bad_weights():
    with pytest.raises(ConfigError, match="at least one"):
        mixture_counts({}, 10)
    with pytest.raises(ConfigError, match="> 0"):
        mixture_counts({"a": 1.0, "b": 0.0}, 10)


def test_mix_datasets_concatenates_and_refuses_other_spaces(tmp_path):
    _save_valid(tmp_path / "a.npz", seed=1)
    _save_valid(tmp_path / "b.npz", seed=2, episodes=5, quality="random")
    a, b = load_dataset(tmp_path / "a.npz"), load_dataset(tmp_path / "b.npz")
    mixed = mix_datasets([(a, 3), (b, 4)])
    validate_arrays(mixed, {"format": FORMAT, "version": VERSION, **_meta(mixed)}, tmp_path / "mix.npz")
    ea, eb = a.episodes(), b.episodes()
    em = {k: _per_episode(mixed, k) for k in ("observations", "actions", "rewards", "slates")}
    assert np.array_equal(em["actions"], np.concatenate([ea["actions"][:3], eb["actions"][:4]]))
    assert np.array_equal(em["rewards"], np.concatenate([ea["rewards"][:3], eb["rewards"][:4]]))
    assert np.array_equal(em["slates"], np.concatenate([ea["slates"][:3, 1:], eb["slates"][:4, 1:]]))
    want_obs = np.concatenate([ea["observations"][:3, :-1], eb["observations"][:4, :-1]])
    assert np.array_equal(em["observations"], want_obs)
    assert np.array_equal(mixed["reset_clicks"], np.concatenate([ea["clicks"][:3, 0], eb["clicks"][:4, 0]]))
    with pytest.raises(ConfigError, match="has 5"):
        mix_datasets([(a, 1), (b, 6)])
    for field, value in (("gems_sha256", "gems1"), ("env", "focused_mix"),
                         ("state_encoder", {"checkpoint": "x.ckpt", "sha256": "enc1"})):
        _save_valid(tmp_path / "c.npz", seed=3, **{field: value})
        c = load_dataset(tmp_path / "c.npz")
        with pytest.raises(ArtifactError, match=f"field '{field}'") as info:
            mix_datasets([(a, 2), (c, 2)])
        assert str(info.value).startswith(f"{c.path}:")


# --------------------------------------------------------------------------- 7-8. Minari and d3rlpy


def _exportable_meta(tmp_path: Path, table: np.ndarray) -> dict[str, Any]:
    """:func:`_meta` plus what a collected dataset records of its environment: every parameter and the table."""
    np.save(tmp_path / "focused.npy", table)
    cfg = make_env_config("focused_topdown", num_items=NUM_ITEMS, episode_length=H_SYN)
    return _meta(VALID, env_config=to_dict(cfg),
                 item_embeddings={"file": str(tmp_path / "focused.npy"), "sha256": "t0"})


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_minari_round_trip_is_exact(tmp_path, monkeypatch, table):
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "unrelated"))
    path = tmp_path / "expert.npz"
    save_dataset(path, VALID, _exportable_meta(tmp_path, table))
    ds = load_dataset(path)
    root = tmp_path / "minari"
    dataset_id = to_minari(ds, root)
    assert dataset_id == "slate_rl/tiny-expert-v0"
    back = from_minari(dataset_id, root)
    assert back.keys() == VALID.keys()
    for key, arr in VALID.items():
        assert back[key].dtype == arr.dtype and np.array_equal(back[key], arr), key
    assert os.environ["MINARI_DATASETS_PATH"] == str(tmp_path / "unrelated")  # restored
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root.resolve()))
    md = minari.load_dataset(dataset_id)
    assert md.total_episodes == E_SYN and md.total_steps == N_SYN
    assert np.array_equal(md.action_space.low, CENTER - SCALE) and np.array_equal(md.action_space.high, CENTER + SCALE)
    assert md.observation_space["slate"].high.max() == NUM_ITEMS - 1
    episode = next(iter(md.iterate_episodes()))
    assert episode.truncations[-1] and not episode.truncations[:-1].any() and not episode.terminations.any()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_minari_export_recovers_its_environment_and_our_normalised_score(tmp_path, monkeypatch, table):
    """Minari's own tools work on the export: ``recover_environment()`` builds the dataset's simulator
    (slate_rl/TopicRec-v0, every parameter, the same table) and ``get_normalized_score`` is our normalised
    score / 100 (Minari's 0-1 scale; the references of a train-offline result)."""
    import minari

    from slate_rl.offline.evaluation import normalized_score

    path = tmp_path / "expert.npz"
    meta = _exportable_meta(tmp_path, table)
    save_dataset(path, VALID, meta)
    references = {"random": {"return_mean": 31.5}, "expert_deterministic": {"return_mean": 97.25},
                  "behaviour": {"return_mean": 90.0}}
    root = tmp_path / "minari"
    dataset_id = to_minari(load_dataset(path), root, references=references)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root.resolve()))
    md = minari.load_dataset(dataset_id)
    env = md.recover_environment()
    assert env.spec.id == "slate_rl/TopicRec-v0" and env.spec.max_episode_steps == H_SYN
    assert to_dict(env.unwrapped.sim.config) == meta["env_config"]
    assert np.array_equal(env.unwrapped.sim.items.numpy(), table)
    obs, _ = env.reset(seed=0)
    assert obs["slate"].shape == (K,)
    returns = np.array([20.0, 64.375, 97.25, 110.0])
    ours = [normalized_score(r, references) for r in returns]
    assert np.allclose(100 * minari.get_normalized_score(md, returns), ours)
    # without references: the environment still, no scores; a dataset that lacks its environment is refused
    other = to_minari(load_dataset(path), root, dataset_id="slate_rl/tiny-noref-v0")
    assert minari.load_dataset(other).recover_environment().spec.kwargs["env"] == meta["env_config"]
    with pytest.raises(ValueError, match="Reference score not provided"):
        minari.get_normalized_score(minari.load_dataset(other), returns)
    with pytest.raises(ArtifactError, match="expert_deterministic"):
        to_minari(load_dataset(path), root, dataset_id="slate_rl/tiny-bad-v0",
                  references={"random": {"return_mean": 1}})
    save_dataset(tmp_path / "old.npz", VALID, _meta(VALID))
    with pytest.raises(ArtifactError, match="field 'env_config' missing"):
        to_minari(load_dataset(tmp_path / "old.npz"), root, dataset_id="slate_rl/tiny-old-v0")
    # the stage takes the references from a train-offline result of this very dataset
    from slate_rl.cli import main

    result = tmp_path / "seed0.json"
    result.write_text(json.dumps({"references": references, "inputs": {"dataset": file_sha256(path)}}))
    stage = ["export-dataset", "--dataset", str(path), "--output-dir", str(tmp_path / "stage"), "--references",
             str(result)]
    assert main([*stage, "--dataset-id", "slate_rl/tiny-stage-v0"]) == 0
    monkeypatch.setenv("MINARI_DATASETS_PATH", str((tmp_path / "stage").resolve()))
    assert np.allclose(100 * minari.get_normalized_score(minari.load_dataset("slate_rl/tiny-stage-v0"), returns), ours)
    result.write_text(json.dumps({"references": references, "inputs": {"dataset": "another"}}))
    assert main([*stage, "--dataset-id", "slate_rl/tiny-stage2-v0"]) == 2
    # ... or from the environment's references file, measured with this dataset's GeMS and expert
    from slate_rl.offline.evaluation import references_document

    settings = {"gems_sha256": meta["gems_sha256"], "expert_sha256": meta["state_encoder"]["sha256"]}
    policies = {name: {"return_mean": references[src]["return_mean"]} for name, src in (
        ("expert", "expert_deterministic"), ("expert_deterministic", "expert_deterministic"),
        ("zero_action", "random"), ("random", "random"))}
    result.write_text(json.dumps(references_document(policies, settings)))
    assert main([*stage, "--dataset-id", "slate_rl/tiny-stage3-v0"]) == 0
    assert np.allclose(100 * minari.get_normalized_score(minari.load_dataset("slate_rl/tiny-stage3-v0"), returns), ours)
    result.write_text(json.dumps(references_document(policies, {**settings, "expert_sha256": "another"})))
    assert main([*stage, "--dataset-id", "slate_rl/tiny-stage4-v0"]) == 2


def test_d3rlpy_dataset_has_every_transition(tmp_path):
    pytest.importorskip("d3rlpy")
    path = tmp_path / "expert.npz"
    save_dataset(path, VALID, _meta(VALID))
    mdp = to_d3rlpy(load_dataset(path))
    assert mdp.transition_count == N_SYN and len(mdp.episodes) == E_SYN


def test_d3rlpy_missing_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "d3rlpy", None)
    monkeypatch.setitem(sys.modules, "d3rlpy.dataset", None)
    path = tmp_path / "expert.npz"
    save_dataset(path, VALID, _meta(VALID))
    with pytest.raises(ConfigError, match=r"slate_rl\[d3rlpy\]"):
        to_d3rlpy(load_dataset(path))


# --------------------------------------------------------------------------- 8b. data where conditioning can matter


class _Constant(Agent):
    """Always the same latent action (tells two mixed behaviours apart)."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value, self.action_dim = value, A
        self.ranker = _gems()

    def act(self, slates, clicks, hidden, deterministic=False, privileged=None):
        action = torch.full((slates.shape[0], A), self.value)
        return self.ranker.rank(action), action, hidden


def test_a_step_mixture_draws_one_expert_probability_per_session(tiny_sim, agent):
    """Seeded statistical test: the per-session fraction of expert steps follows its p ~ U(0, 1) (mean 1/2, std
    1/sqrt(12) of p, plus the binomial noise of 10 steps), differs between sessions, and p = 0 / 1 give the other
    behaviour's and the expert's actions."""
    expert, other = _Constant(0.5), _Constant(-0.5)
    torch.manual_seed(0)
    arrays = _collect(tiny_sim, StepMixPolicy(expert, other), agent.actor_belief, 3, 2000, "eval")
    frac = (_per_episode(arrays, "actions")[..., 0] > 0).mean(axis=1)
    # Var(fraction) = Var(p) + E[p (1 - p)] / H = 1/12 + 1/(6 H)
    assert abs(frac.mean() - 0.5) < 0.03 and abs(frac.var() - (1 / 12 + 1 / (6 * HORIZON))) < 0.015
    assert stats.kstest(frac, "uniform").statistic < 0.1  # close to U(0, 1) (a 10-step binomial smooths it)
    for p, value in ((0.0, -0.5), (1.0, 0.5)):
        fixed = _collect(tiny_sim, StepMixPolicy(expert, other, p), agent.actor_belief, 3, 20, "eval")
        assert np.all(fixed["actions"] == value)
    wide = _Constant(0.0)
    wide.action_dim = A + 1
    with pytest.raises(ConfigError, match="one action space"):
        StepMixPolicy(expert, wide)


def test_a_noise_sweep_keeps_one_level_per_session(tiny_sim, agent):
    """Each session draws its level when it starts (uniformly: a seeded chi-square test) and keeps it; a session
    at level 0 acts with the policy's own action (clipped to the box), the others add noise of their level."""
    levels = [0.0, 0.3, 1.0]
    policy = NoisyPolicy(agent, levels)
    state, obs = tiny_sim.reset(torch.arange(3000))
    torch.manual_seed(0)
    _, action, (inner, std) = policy.act(obs.slate, obs.clicks, None, deterministic=True)
    counts = np.array([(std == x).sum().item() for x in levels])
    assert counts.sum() == 3000 and stats.chisquare(counts).pvalue > 0.01
    own = agent.ranker.clip(agent.act(obs.slate, obs.clicks, None, deterministic=True)[1])
    quiet = std == 0
    assert torch.allclose(action[quiet], own[quiet]) and not torch.allclose(action[~quiet], own[~quiet])
    deviation = ((action - own).abs() / agent.ranker.action_scale).mean(dim=1)
    assert deviation[std == 0.3].mean() < deviation[std == 1.0].mean()
    _, _, (_, again) = policy.act(obs.slate, obs.clicks, (inner, std), deterministic=True)
    assert torch.equal(again, std)  # the next steps keep the session's level
    assert NoisyPolicy(agent, 0.2).levels is None and NoisyPolicy(agent, [0.2, 0.4]).noise is None


def test_uniform_policy_acts_like_the_random_quality(tiny_sim, agent):
    torch.manual_seed(4)
    a = _collect(tiny_sim, UniformPolicy(agent), agent.actor_belief, 2, 16, "eval")
    torch.manual_seed(4)
    b = _collect(tiny_sim, agent, agent.actor_belief, 2, 16, "random")
    assert np.array_equal(a["actions"], b["actions"]) and np.array_equal(a["slates"], b["slates"])


def test_the_spread_check_refuses_a_return_that_does_not_vary_with_the_level():
    cfg = OfflineDataConfig(label_margin=0.1)
    check_spread("noise_sweep", [{"level": 0.0, "mean": 120.0}, {"level": 0.8, "mean": 100.0}], cfg)
    with pytest.raises(ArtifactError, match=r"returns 105.00 at its best level \(0\) and 100.00 at its worst "
                                            r"\(0.8\).*needs > 110.00"):
        check_spread("noise_sweep", [{"level": 0.0, "mean": 105.0}, {"level": 0.8, "mean": 100.0}], cfg)
    with pytest.raises(ConfigError, match="sweep_noises must hold at least two distinct"):
        OfflineDataConfig(sweep_noises=[0.1, 0.1])
    with pytest.raises(ConfigError, match="sweep_noises"):
        OfflineDataConfig(sweep_noises=[0.0, -0.1])


# --------------------------------------------------------------------------- 9. the `slate-rl collect` stage


@pytest.fixture(scope="module")
def cli_inputs(tmp_path_factory, table, tiny_sim) -> dict[str, Path]:
    """A GeMS checkpoint, an agent run (best.ckpt + last.ckpt) and the item table, all tiny."""
    root = tmp_path_factory.mktemp("collect")
    np.save(root / "focused.npy", table)
    gems = _gems(seed=7)
    save_gems_ranker(root / "gems.ckpt", gems)
    agent = _agent(tiny_sim, gems, seed=7)
    run = root / "run"
    cfg = OnlineConfig(total_steps=4, sessions_per_step=3, updates_per_step=1, batch_size=2, buffer_capacity=10,
                       warmup_sessions=1, val_interval=2, val_sessions=4, checkpoint_interval=2)

    def save_best(a, state):
        save_agent(run / "best.ckpt", a, TAG, {"step": state.step, "val_return": state.best_val})

    train_online(tiny_sim, agent, cfg, seed=1, save_best=save_best, last_path=run / "last.ckpt", progress=False)
    return {"root": root, "embeddings": root / "focused.npy", "gems": root / "gems.ckpt", "best": run / "best.ckpt",
            "last": run / "last.ckpt"}


def _cli(inputs, quality, output, *extra: str, expert: Path | None = None) -> int:
    """`slate-rl collect`: the agent (SAC hidden width 32, ranker belief table) is rebuilt from its checkpoint,
    no agent flag is passed."""
    return main(["collect", "--env", "tiny", "--env-spec", json.dumps(ENV_SPEC), "--embeddings-file",
                 str(inputs["embeddings"]), "--gems", str(inputs["gems"]), "--expert",
                 str(expert or inputs["best"]), "--episodes", "8", "--test-sessions", "8",
                 "--device", "cpu", "--no-progress", "--logger-mode", "disabled", "--quality", quality,
                 "--output", str(output), *extra])


@pytest.fixture(scope="module")
def collected(cli_inputs) -> dict[str, Path]:
    out = cli_inputs["root"] / "offline"
    runs = {
        # The tiny agents are untrained: their labels would (rightly) fail the check.
        "expert": ("--stochastic", "--noise", "0", "--skip-label-check"),
        "random": (),
        "replay": (),
        "medium": ("--behaviour", str(cli_inputs["best"]), "--noise", "0", "--skip-label-check"),
        "mixed": ("--mix", str(out / "expert.npz") + "=1", "--mix", str(out / "random.npz") + "=3"),
    }
    paths = {}
    for quality, extra in runs.items():
        paths[quality] = out / f"{quality}.npz"
        assert _cli(cli_inputs, quality, paths[quality], *extra) == 0, quality
    return paths


@pytest.fixture(scope="module")
def loaded_expert(cli_inputs, tiny_sim):
    gems = load_gems_ranker(cli_inputs["gems"], num_items=NUM_ITEMS)
    agent = _agent(tiny_sim, gems, seed=99)
    load_agent(cli_inputs["best"], agent, TAG)
    return agent


def test_cli_datasets_load_with_the_right_metadata(cli_inputs, collected):
    gems_sha, expert_sha = file_sha256(cli_inputs["gems"]), file_sha256(cli_inputs["best"])
    for quality, path in collected.items():
        ds = load_dataset(path, expect_gems_sha256=gems_sha, expect_env="tiny")
        m = ds.metadata
        assert m["quality"] == quality and m["gems_sha256"] == gems_sha and ds.num_episodes == 8, quality
        assert m["state_encoder"]["sha256"] == expert_sha and m["state_encoder"]["module"] == "actor_belief"
        assert m["env_config"]["num_items"] == NUM_ITEMS and m["episode_length"] == HORIZON
        assert m["action_center"] == CENTER.tolist() and m["action_scale"] == SCALE.tolist()
        r = m["behaviour_return"]
        if quality in ("replay", "mixed"):  # no online behaviour: the dataset's own return
            assert r["source"] == "dataset" and r["n"] == 8
            assert r["mean"] == pytest.approx(ds.episode_returns().mean())
        else:
            assert r["source"].startswith("online, 8 users") and r["n"] == 8 and np.isfinite(r["ci95"])
            assert m["behaviour"]["sha256"] == expert_sha
    modes = {q: load_dataset(collected[q]).metadata["behaviour"]["mode"] for q in ("expert", "random", "medium")}
    assert modes == {"expert": "train", "random": "random", "medium": "eval"}


@pytest.mark.parametrize(("quality", "mode"), [("expert", "train"), ("medium", "eval"), ("random", "random")])
def test_cli_datasets_are_the_checkpoints_behaviour(collected, tiny_sim, loaded_expert, quality, mode):
    """Each dataset, and its behaviour return on the test users, is reproduced from the checkpoint and the
    seeds with the behaviour acting in the collection's mode (the measurement is seeded with the test seed,
    so that the sampled actions draw the same numbers)."""
    ds = load_dataset(collected[quality])
    ep = ds.episodes()
    beliefs = encode_beliefs(loaded_expert.actor_belief, torch.from_numpy(ep["slates"]).long(),
                             torch.from_numpy(ep["clicks"]))
    np.testing.assert_allclose(ep["observations"], beliefs.numpy(), rtol=0, atol=1e-5)
    want = _collect(tiny_sim, loaded_expert, loaded_expert.actor_belief, quality_seed(0, quality), 8, mode)
    torch.manual_seed(58517)  # the stage seeds its measurement with the test seed
    online = policy_returns(tiny_sim, loaded_expert, 58517, 8, mode).numpy()
    for key in ("slates", "clicks", "rewards", "reset_clicks"):
        assert np.array_equal(ds.arrays[key], want[key]), key
    np.testing.assert_allclose(ds.arrays["actions"], want["actions"], rtol=0, atol=1e-5)
    assert ds.metadata["behaviour_return"]["mean"] == pytest.approx(online.mean())
    for other in {"train", "eval", "random"} - {mode}:  # the check tells the modes apart
        assert policy_returns(tiny_sim, loaded_expert, 58517, 8, other).mean().item() != pytest.approx(online.mean())


@pytest.mark.parametrize(("quality", "extra", "levels"), [
    ("step_mix", ("--behaviour", "BEST"), [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("step_mix", ("--step-mix-other", "random"), [0.0, 0.25, 0.5, 0.75, 1.0]),
    ("noise_sweep", ("--sweep-noises", "0,0.5,2"), [0.0, 0.5, 2.0]),
])
def test_cli_swept_qualities_record_the_return_of_each_level(cli_inputs, tmp_path, quality, extra, levels):
    extra = tuple(str(cli_inputs["best"]) if x == "BEST" else x for x in extra)
    out = tmp_path / f"{quality}.npz"
    assert _cli(cli_inputs, quality, out, *extra, "--skip-label-check") == 0
    ds = load_dataset(out)
    b = ds.metadata["behaviour"]
    assert ds.metadata["quality"] == quality and ds.num_episodes == 8 and b["mode"] == "eval"
    assert [r["level"] for r in b["returns_by_level"]] == levels
    assert all(np.isfinite(r["mean"]) and r["n"] == 8 for r in b["returns_by_level"])
    assert b["level"] == ("expert_probability" if quality == "step_mix" else "noise")
    assert b["sha256"] == file_sha256(cli_inputs["best"]) and b["label_checked"] is False
    if quality == "step_mix":
        assert b["other"] == ("random" if "random" in extra else "medium")
        assert b["other_checkpoint"] == (None if "random" in extra else str(cli_inputs["best"]))
    assert ds.metadata["behaviour_return"]["source"].startswith("online, 8 users")


def test_cli_swept_qualities_refuse_a_false_label_and_a_missing_behaviour(cli_inputs, tmp_path, capsys):
    out = tmp_path / "noise_sweep.npz"
    assert _cli(cli_inputs, "noise_sweep", out, "--label-margin", "1000") == 2
    assert "does not vary with the level" in capsys.readouterr().err and not out.exists()
    assert not list(tmp_path.iterdir())  # nothing half-written
    assert _cli(cli_inputs, "step_mix", tmp_path / "step_mix.npz") == 2
    assert "--quality step_mix mixes the expert with the medium behaviour" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _cli(cli_inputs, "noise_sweep", out, "--sweep-noises", "0,nan")
    assert "argument --sweep-noises: expected comma-separated finite numbers" in capsys.readouterr().err


def _tiny_logs(cli_inputs, name: str, env: str = "tiny", sessions: int = 10) -> Path:
    path = cli_inputs["root"] / f"{name}.npz"
    if not path.exists():
        assert main(["generate-logs", "--env", env, "--env-spec", json.dumps(ENV_SPEC), "--embeddings-file",
                     str(cli_inputs["embeddings"]), "--sessions", str(sessions), "--seed", "3", "--device", "cpu",
                     "--no-progress", "--output", str(path)]) == 0
    return path


def test_cli_logged_is_the_logged_sessions_in_the_experts_states_and_gems_actions(cli_inputs, loaded_expert,
                                                                                  tmp_path):
    """``logged``: the first sessions of data/logs/{env}.npz, states from the expert's actor GRU, actions the GeMS
    encoder's mean of each shown (slate, clicks) clipped to the box, rewards the clicks; the metadata says how
    often an action decodes back to its logged slate."""
    from slate_rl.data.logs import load_logs

    logs_path = _tiny_logs(cli_inputs, "logs")
    out = tmp_path / "logged.npz"
    assert _cli(cli_inputs, "logged", out, "--logs", str(logs_path)) == 0
    ds, logs = load_dataset(out), load_logs(logs_path)
    ep = ds.episodes()
    assert np.array_equal(ep["slates"][:, 1:], logs.slates[:8])
    assert np.array_equal(ep["clicks"][:, 0], logs.reset_clicks[:8])
    assert np.array_equal(ep["rewards"].sum(axis=1), logs.returns[:8])
    gems = load_gems_ranker(cli_inputs["gems"], num_items=NUM_ITEMS)
    raw = relabel_actions(gems, logs.slates[:8].reshape(-1, K), logs.clicks[:8].reshape(-1, K))
    want = gems.clip(torch.from_numpy(raw)).numpy()
    np.testing.assert_allclose(ds.arrays["actions"], want, rtol=0, atol=1e-6)
    beliefs = encode_beliefs(loaded_expert.actor_belief, torch.from_numpy(ep["slates"]).long(),
                             torch.from_numpy(ep["clicks"]))
    np.testing.assert_allclose(ep["observations"], beliefs.numpy(), rtol=0, atol=1e-5)
    b = ds.metadata["behaviour"]
    decoded = gems.rank(torch.from_numpy(want)).numpy()
    assert b["source"] == "logged sessions" and b["sha256"] == file_sha256(logs_path)
    assert b["decoded_slot_match"] == pytest.approx(float((decoded == logs.slates[:8].reshape(-1, K)).mean()))
    assert 0.0 <= b["decoded_slate_match"] <= b["decoded_slot_match"] <= 1.0 and 0.0 <= b["clipped_fraction"] <= 1
    assert ds.metadata["behaviour_return"]["source"] == "dataset"


@pytest.mark.parametrize(("extra", "needle"), [
    ((), "--quality logged needs --logs"),
    (("--episodes", "11"), "holds 10 sessions"),
    (("--env-logs",), "field 'metadata.env' is 'other'"),
])
def test_cli_logged_refuses_missing_short_or_foreign_logs(cli_inputs, tmp_path, capsys, extra, needle):
    if extra == ("--env-logs",):
        extra = ("--logs", str(_tiny_logs(cli_inputs, "other_logs", env="other")))
    elif extra:
        extra = ("--logs", str(_tiny_logs(cli_inputs, "logs")), *extra)
    capsys.readouterr()
    out = tmp_path / "logged.npz"
    args = [a for a in ("--episodes", "8") if "--episodes" not in extra]
    code = main(["collect", "--env", "tiny", "--env-spec", json.dumps(ENV_SPEC), "--embeddings-file",
                 str(cli_inputs["embeddings"]), "--gems", str(cli_inputs["gems"]), "--expert", str(cli_inputs["best"]),
                 *args, "--test-sessions", "8", "--device", "cpu", "--no-progress", "--logger-mode", "disabled",
                 "--quality", "logged", "--output", str(out), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not out.exists()


def test_cli_replay_is_the_last_sessions_of_the_training_buffer(cli_inputs, collected):
    payload = torch.load(cli_inputs["last"], map_location="cpu", weights_only=True)
    buf = EpisodeBuffer(10, HORIZON, K, A)
    buf.load_state_dict(payload["buffer"])
    assert buf.episodes_added == 12 and len(buf) == 10  # the ring buffer wrapped around
    want = {k: v[-8:].numpy() for k, v in buf.episodes().items()}
    ep = load_dataset(collected["replay"]).episodes()
    for key in ("slates", "clicks", "actions", "rewards"):
        assert np.array_equal(ep[key], want[key]), key
    assert load_dataset(collected["replay"]).metadata["behaviour"]["sha256"] == file_sha256(cli_inputs["last"])


def test_cli_mixture_takes_episodes_in_proportion(collected):
    mixed = load_dataset(collected["mixed"])
    parts = mixed.metadata["behaviour"]["mixture"]
    assert [(p["quality"], p["episodes"]) for p in parts] == [("expert", 2), ("random", 6)]
    ep = mixed.episodes()
    ex, rd = load_dataset(collected["expert"]).episodes(), load_dataset(collected["random"]).episodes()
    for key in ("slates", "clicks", "actions", "rewards", "observations"):
        assert np.array_equal(ep[key], np.concatenate([ex[key][:2], rd[key][:6]])), key


@pytest.mark.parametrize(("case", "quality", "extra", "needle"), [
    ("unknown quality", "great", (), "unknown quality 'great'"),
    ("mix with a base quality", "expert", ("--mix", "{expert}=1"), "--mix builds a mixture"),
    ("non-GeMS agent", "expert", (), "SAC+GeMS"),
    ("replay without last.ckpt", "replay", (), "last.ckpt"),
    ("mixture of another GeMS", "mixed", ("--mix", "{alien}=1"), "gems_sha256"),
    ("negative noise", "expert", ("--noise", "-0.1"), "--noise"),
    ("mislabelled expert", "expert", (), "not above the random-quality return"),
    ("mislabelled medium", "medium", ("--behaviour", "{best}"), "the medium behaviour returns"),
])
def test_cli_bad_inputs_give_one_error_line(cli_inputs, collected, tmp_path, capsys, tiny_sim, case, quality, extra,
                                           needle):
    expert = cli_inputs["best"]
    if case == "non-GeMS agent":
        expert = tmp_path / "topk" / "best.ckpt"
        other = build_agent("sac_topk_ideal", tiny_sim.items, NUM_ITEMS, K, HORIZON, config=SACConfig(hidden=32))
        save_agent(expert, other, "sac_topk_ideal", {"step": 0})
    if case == "replay without last.ckpt":
        expert = tmp_path / "lonely" / "best.ckpt"
        expert.parent.mkdir()
        shutil.copy(cli_inputs["best"], expert)
    alien = tmp_path / "alien.npz"
    ds = load_dataset(collected["expert"])
    meta = {k: v for k, v in ds.metadata.items() if k not in ("format", "version")}
    save_dataset(alien, ds.arrays, {**meta, "gems_sha256": "0" * 16})
    extra = tuple(x.format(expert=collected["expert"], alien=alien, best=cli_inputs["best"]) for x in extra)
    out = tmp_path / "out.npz"
    capsys.readouterr()
    assert _cli(cli_inputs, quality, out, *extra, expert=expert) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err
    assert not out.exists() and not metadata_path(out).exists()


def test_label_check_names_both_returns_and_the_margin():
    """check_label: expert/medium must beat (1 + margin) x random; random, replay and mixtures are not checked."""
    rnd, agent, cfg = {"mean": 40.0, "ci": 1.0}, {"mean": 44.0, "ci": 2.0}, OfflineDataConfig(label_margin=0.1)
    check_label("expert", {"mean": 44.1, "ci": 1.0}, rnd, agent, cfg)
    check_label("random", {"mean": 10.0, "ci": 1.0}, rnd, agent, cfg)
    with pytest.raises(ArtifactError) as err:
        check_label("medium", {"mean": 43.7, "ci": 0.9}, rnd, agent, cfg, 0.5)
    msg = str(err.value)
    assert "43.70 +- 0.90" in msg and "40.00 +- 1.00" in msg and "needs > 44.00" in msg and "label_margin" in msg


def test_label_check_refuses_a_noisy_expert_below_the_ratio_of_its_agent():
    """The expert behaviour must reach label_ratio x the collecting agent's deterministic test return: 0.83 x (the
    noisy expert of an AMD run: 284.9 against 344.1) is refused with both numbers, 0.9 x passes."""
    rnd, agent, cfg = {"mean": 90.0, "ci": 1.0}, {"mean": 344.1, "ci": 6.2}, OfflineDataConfig(label_ratio=0.9)
    check_label("expert", {"mean": 0.9 * 344.1, "ci": 4.0}, rnd, agent, cfg)
    with pytest.raises(ArtifactError) as err:
        check_label("expert", {"mean": 284.9, "ci": 4.1}, rnd, agent, cfg)
    msg = str(err.value)
    assert "284.90 +- 4.10" in msg and "344.10 +- 6.20" in msg and "needs >= 309.69" in msg, msg
    assert "label_ratio" in msg and "offline_data.noise" in msg
    check_label("expert", {"mean": 284.9, "ci": 4.1}, rnd, agent, OfflineDataConfig(label_ratio=0.8))


@pytest.mark.parametrize(("medium", "ok"), [(172.0, True), (0.9 * 172.05, True), (172.05 / 0.9, True),
                                            (0.89 * 172.05, False), (172.05 / 0.89, False)])
def test_label_check_keeps_medium_near_its_target(medium, ok):
    """Medium: within [ratio, 1/ratio] x medium_fraction x the agent's deterministic test return (0.5 x 344.1)."""
    rnd, agent, cfg = {"mean": 30.0, "ci": 1.0}, {"mean": 344.1, "ci": 6.2}, OfflineDataConfig(label_ratio=0.9)
    if ok:
        check_label("medium", {"mean": medium, "ci": 2.0}, rnd, agent, cfg, 0.5)
        return
    with pytest.raises(ArtifactError, match=r"outside \[154\.85, 191\.17\].*target 172\.05.*medium_fraction"):
        check_label("medium", {"mean": medium, "ci": 2.0}, rnd, agent, cfg, 0.5)
    with pytest.raises(ArtifactError, match="records no medium_fraction"):
        check_label("medium", {"mean": medium, "ci": 2.0}, rnd, agent, cfg, None)


def test_label_ratio_outside_0_1_is_refused():
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ConfigError, match="offline_data.label_ratio must be in"):
            OfflineDataConfig(label_ratio=bad)
