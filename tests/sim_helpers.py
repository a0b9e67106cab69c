"""Helpers and fixtures of the simulator tests: simulator construction, hand-made user states,
the item tables (generated, and the paper's own)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from slate_rl.core.rng import derive_key
from slate_rl.sim.config import TopicRecConfig, make_env_config
from slate_rl.sim.core import SimState, TopicRec
from slate_rl.sim.embeddings import generate_item_embeddings


def make_sim(table: np.ndarray, env: str = "focused_topdown", **overrides) -> TopicRec:
    return TopicRec(make_env_config(env, **overrides), table, "cpu")


def keys(n: int, seed: int = 0) -> torch.Tensor:
    """Keys of users 0..n-1 under ``seed``."""
    return derive_key(seed, torch.arange(n, dtype=torch.int64))


def make_state(
    sim: TopicRec,
    n: int,
    *,
    t: int = 0,
    user: torch.Tensor | None = None,
    bored: Sequence[int] = (),
    timer: dict[int, int] | None = None,
    recent: Sequence[tuple[int, int, int]] = (),
    short_term: int = 0,
    seed: int = 0,
) -> SimState:
    """``n`` users (keys 0..n-1 under ``seed``) in a hand-made situation.

    ``user``: (D,) vector shared by every user (default: each user's own sampled vector);
    ``bored``: bored topics; ``timer``: topic -> timer (others at boredom_duration);
    ``recent``: the recent-click list as (topic, step, rank) triples (corrected bookkeeping's
    aligned list: use a ``boredom_bookkeeping="corrected"`` simulator); ``short_term``: the
    short-term topic of every user.
    """
    c: TopicRecConfig = sim.config
    k = keys(n, seed)
    u = sim.sample_users(k) if user is None else user.to(torch.float32).reshape(1, -1).repeat(n, 1)
    bored_t = torch.zeros(n, c.num_topics, dtype=torch.bool)
    for b in bored:
        bored_t[:, b] = True
    timer_t = torch.full((n, c.num_topics), c.boredom_duration, dtype=torch.int64)
    for topic, value in (timer or {}).items():
        timer_t[:, topic] = value
    assert len(recent) <= c.recent_clicks_maxlen
    rt = torch.full((n, c.recent_clicks_maxlen), -1, dtype=torch.int64)
    ro = torch.full((n, c.recent_clicks_maxlen), -1, dtype=torch.int64)
    for j, (topic, step, rank) in enumerate(recent):
        rt[:, j] = topic
        ro[:, j] = step * c.slate_size + rank
    return SimState(
        key=k,
        t=torch.full((n,), t, dtype=torch.int64),
        user=u,
        bored=bored_t,
        timer=timer_t,
        recent_topic=rt,
        recent_order=ro,
        short_term=torch.full((n,), short_term, dtype=torch.int64),
    )


def block_norms(x: torch.Tensor, num_topics: int = 10, topic_size: int = 2) -> torch.Tensor:
    """(..., D) -> (..., T) norms of the topic blocks."""
    return x.reshape(*x.shape[:-1], num_topics, topic_size).norm(dim=-1)


def recent_clicks(state: SimState, i: int) -> list[tuple[int, int]]:
    """User ``i``'s recent-click list as sorted (order key, topic) pairs (corrected bookkeeping)."""
    order = state.recent_order[i].tolist()
    topic = state.recent_topic[i].tolist()
    return sorted((o, tp) for o, tp in zip(order, topic, strict=True) if o >= 0)


# --------------------------------------------------------------------------- fixtures
# Registered for every test by ``pytest_plugins = ["sim_helpers"]`` in conftest.py.


@pytest.fixture
def single_thread():
    """Run a test with one intra-op thread (restored afterwards).

    The simulator's results do not depend on the thread count (tested), but on a busy 2-core
    machine two OpenMP threads sharing one free core run many times slower than one thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def focused_table() -> np.ndarray:
    """The focused table generated from the project's default seed."""
    return generate_item_embeddings("focused")


@pytest.fixture(scope="session")
def diffuse_table() -> np.ndarray:
    """The diffuse table generated from the project's default seed."""
    return generate_item_embeddings("diffuse")


@pytest.fixture(scope="session")
def sim(focused_table: np.ndarray) -> TopicRec:
    """focused_topdown on the generated focused table, on CPU."""
    return make_sim(focused_table)


@pytest.fixture(scope="session")
def sim_corrected(focused_table: np.ndarray) -> TopicRec:
    """focused_topdown with the corrected (aligned) recent-click bookkeeping, on CPU."""
    return make_sim(focused_table, boredom_bookkeeping="corrected")


@pytest.fixture(scope="session")
def paper_tables(paper_embeddings_dir: Path) -> dict[str, np.ndarray]:
    """The GeMS paper's item tables (``paper_embeddings_dir`` of conftest.py skips when absent)."""
    return {
        kind: np.load(paper_embeddings_dir / f"item_embeddings_{kind}.npy", allow_pickle=False)
        for kind in ("focused", "diffuse")
    }
