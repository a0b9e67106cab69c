"""Reproducibility of the simulator: same keys, same trajectory; batch invariance; the
Gymnasium single and vector environments agree with each other and with SyncVectorEnv."""

from __future__ import annotations

import warnings
from dataclasses import fields

import gymnasium
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from sim_helpers import keys, make_sim

from slate_rl.core import rng
from slate_rl.sim.core import SimState, StepResult, TopicRec
from slate_rl.sim.gym_env import TopicRecEnv, TopicRecVectorEnv
from slate_rl.sim.policies import EpsilonGreedyOracle, RandomPolicy, random_slates
from slate_rl.sim.rollout import run_sessions

pytestmark = pytest.mark.usefixtures("single_thread")

K = 10


def _trajectory(sim: TopicRec, user_keys: torch.Tensor, policy, steps: int = 100) -> list[tuple[SimState, StepResult]]:
    pkeys = rng.subkey(user_keys, 7)
    state, res = sim.reset(user_keys)
    out = [(state, res)]
    for _ in range(steps):
        state, res = sim.step(state, policy(pkeys, state.t, res.slate, res.clicks))
        out.append((state, res))
    return out


def _assert_same(a: list[tuple[SimState, StepResult]], b: list[tuple[SimState, StepResult]], rows=slice(None)) -> None:
    assert len(a) == len(b)
    for (sa, ra), (sb, rb) in zip(a, b, strict=True):
        for obj_a, obj_b in ((sa, sb), (ra, rb)):
            for f in fields(obj_a):
                x, y = getattr(obj_a, f.name)[rows], getattr(obj_b, f.name)
                assert x.dtype == y.dtype and torch.equal(x, y), f.name


def test_same_keys_same_trajectory(sim: TopicRec) -> None:
    k = keys(32, seed=1)
    policy = RandomPolicy(1000, K)
    a = _trajectory(sim, k, policy)
    b = _trajectory(sim, k.clone(), policy)
    _assert_same(a, b)
    assert float(sum(r.reward.sum() for _, r in a)) > 0
    # Different keys give a different trajectory.
    c = _trajectory(sim, keys(32, seed=2), policy, steps=5)
    assert not torch.equal(a[5][1].clicks, c[5][1].clicks)


def test_batch_invariance(sim: TopicRec) -> None:
    """A user's trajectory is the same alone (B = 1) or among 63 others (B = 64)."""
    k = keys(64, seed=3)
    policy = EpsilonGreedyOracle(1000, K, 0.5)
    batch = _trajectory(sim, k, policy)
    for i in (0, 17, 63):
        alone = _trajectory(sim, k[i : i + 1], policy)
        _assert_same(batch, alone, rows=slice(i, i + 1))
    # ... and the same in a batch with other users (different composition and position).
    perm = torch.tensor([63, 5, 17, 0])
    _assert_same(batch, _trajectory(sim, k[perm], policy), rows=perm)


def test_random_slates_are_distinct_and_batch_invariant() -> None:
    k = keys(256, seed=4)
    s = random_slates(k, 3, 1000, K)
    assert int(s.min()) >= 0 and int(s.max()) < 1000
    assert all(len(set(row)) == K for row in s.tolist())
    assert torch.equal(s[10:11], random_slates(k[10:11], 3, 1000, K))


@pytest.mark.parametrize("policy_name", ["random", "eps-greedy"])
def test_run_sessions_independent_of_batch_size(sim: TopicRec, policy_name: str) -> None:
    from slate_rl.sim.policies import make_policy

    policy = make_policy(policy_name, 1000, K, 0.5)
    a = run_sessions(sim, policy, 70, seed=11, batch_size=7, record=True)
    b = run_sessions(sim, policy, 70, seed=11, batch_size=64, record=True)
    np.testing.assert_array_equal(a.returns, b.returns)
    np.testing.assert_array_equal(a.slates, b.slates)
    np.testing.assert_array_equal(a.clicks, b.clicks)
    np.testing.assert_array_equal(a.reset_clicks, b.reset_clicks)
    assert a.returns.std() > 0
    np.testing.assert_array_equal(a.returns, a.clicks.sum(axis=(1, 2)))
    # Another seed gives other users.
    c = run_sessions(sim, policy, 70, seed=12, batch_size=64)
    assert not np.array_equal(a.returns, c.returns)


def test_run_sessions_independent_of_thread_count(focused_table: np.ndarray) -> None:
    """Same sessions with 1 and 2 intra-op threads (B = 64: the (64, 1000) oracle scores are
    large enough for parallel kernels; 30-step sessions keep the test short)."""
    from slate_rl.sim.policies import make_policy

    sim = make_sim(focused_table, episode_length=30)
    policy = make_policy("eps-greedy", 1000, K, 0.5)
    torch.set_num_threads(2)  # the single_thread fixture restores the count afterwards
    two = run_sessions(sim, policy, 64, seed=13, batch_size=64, record=True)
    torch.set_num_threads(1)
    one = run_sessions(sim, policy, 64, seed=13, batch_size=64, record=True)
    np.testing.assert_array_equal(one.slates, two.slates)
    np.testing.assert_array_equal(one.clicks, two.clicks)


# --------------------------------------------------------------------------- Gymnasium


def test_check_env(focused_table: np.ndarray) -> None:
    env = TopicRecEnv(item_embeddings=focused_table)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker warning fails the test ...
        # ... except this one: the env has no render modes (made without gymnasium.make, no spec).
        warnings.filterwarnings("ignore", message=".*alternative render modes.*")
        check_env(env)


def test_single_env_episode(focused_table: np.ndarray) -> None:
    env = TopicRecEnv(item_embeddings=focused_table)
    obs, info = env.reset(seed=5)
    assert env.observation_space.contains(obs)
    assert set(info) == {"user", "user_effective", "bored", "relevance"}
    total, steps, truncated = 0.0, 0, False
    while not truncated:
        obs, reward, terminated, truncated, info = env.step(np.full(K, -1))
        assert not terminated and env.observation_space.contains(obs)
        assert reward == float(obs["clicks"].sum())
        total += reward
        steps += 1
    assert steps == 100 and total > 0
    with pytest.raises(gymnasium.error.ResetNeeded):
        env.step(np.full(K, -1))
    # reset(seed) replays the same user; reset() without a seed moves to the next user.
    first, _ = env.reset(seed=5)
    second, _ = env.reset()
    again, _ = env.reset(seed=5)
    np.testing.assert_array_equal(first["clicks"], again["clicks"])
    assert env.np_random is not None and second is not None


def _random_actions(n_steps: int, num_envs: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    acts = g.integers(0, 1000, size=(n_steps, num_envs, K))
    acts[g.random((n_steps, num_envs, K)) < 0.5] = -1  # oracle slots too
    return acts


def _assert_obs_equal(a: dict, b: dict) -> None:
    np.testing.assert_array_equal(a["slate"], b["slate"])
    np.testing.assert_array_equal(a["clicks"], b["clicks"])


def test_vector_env_slots_equal_single_envs(focused_table: np.ndarray) -> None:
    """Slot j of TopicRecVectorEnv(4) reset with seed s is TopicRecEnv reset with seed s + j,
    over 2 full episodes and the NEXT_STEP autoreset between them."""
    n, seed = 4, 123
    venv = TopicRecVectorEnv(n, item_embeddings=focused_table)
    singles = [TopicRecEnv(item_embeddings=focused_table) for _ in range(n)]
    vobs, vinfo = venv.reset(seed=seed)
    sobs = [e.reset(seed=seed + j) for j, e in enumerate(singles)]
    for j in range(n):
        _assert_obs_equal({k: v[j] for k, v in vobs.items()}, sobs[j][0])
        np.testing.assert_array_equal(vinfo["user"][j], sobs[j][1]["user"])
    actions = _random_actions(202, n, seed=0)
    need_reset = [False] * n
    autoresets = 0
    for t, act in enumerate(actions):
        vobs, vrew, vterm, vtrunc, vinfo = venv.step(act)
        for j, env in enumerate(singles):
            if need_reset[j]:  # NEXT_STEP: this step resets the slot, reward 0, action ignored
                obs, info = env.reset()
                rew, term, trunc = 0.0, False, False
                need_reset[j] = False
                autoresets += 1
            else:
                obs, rew, term, trunc, info = env.step(act[j])
                need_reset[j] = trunc
            _assert_obs_equal({k: v[j] for k, v in vobs.items()}, obs)
            assert vrew[j] == rew and vterm[j] == term and vtrunc[j] == trunc, (t, j)
            for key in ("user", "user_effective", "bored", "relevance"):
                np.testing.assert_array_equal(vinfo[key][j], info[key])
        if t == 99:
            assert vtrunc.all()
    # Steps 1-100: episode 1; step 101: autoreset; steps 102-201: episode 2; step 202: autoreset.
    assert autoresets == 2 * n


def test_gymnasium_make() -> None:
    import slate_rl.sim  # noqa: F401  (registers the id)

    env = gymnasium.make("slate_rl/TopicRec-v0", env="diffuse_mix")
    try:
        assert env.unwrapped.sim.config.click_model == "mix"
        assert env.unwrapped.sim.config.embeddings == "diffuse"
        obs, _ = env.reset(seed=0)
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and reward >= 0 and not terminated and not truncated
    finally:
        env.close()


def test_native_vector_env_equals_sync_vector_env(focused_table: np.ndarray) -> None:
    n, seed, steps = 4, 77, 205
    native = TopicRecVectorEnv(n, item_embeddings=focused_table)
    sync = gymnasium.vector.SyncVectorEnv(
        [lambda: TopicRecEnv(item_embeddings=focused_table)] * n,
        autoreset_mode=gymnasium.vector.AutoresetMode.NEXT_STEP,
    )
    try:
        a_obs, a_info = native.reset(seed=seed)
        b_obs, b_info = sync.reset(seed=seed)
        _assert_obs_equal(a_obs, b_obs)
        np.testing.assert_array_equal(a_info["user"], b_info["user"])
        truncations = 0
        for act in _random_actions(steps, n, seed=1):
            a = native.step(act)
            b = sync.step(act)
            _assert_obs_equal(a[0], b[0])
            for x, y in zip(a[1:4], b[1:4], strict=True):
                np.testing.assert_array_equal(x, y)
            for key in ("user", "user_effective", "bored", "relevance"):
                np.testing.assert_array_equal(a[4][key], b[4][key])
            truncations += int(a[3].sum())
        assert truncations == 2 * n  # two episodes ended (steps 100 and 201) in every slot
    finally:
        sync.close()
