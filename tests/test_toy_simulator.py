"""A second simulator, defined in this one file and nowhere in the package: the pipeline runs on anything that
implements :class:`slate_rl.sim.protocol.Simulator` and whose config dataclass names it.

The toy: a user is a non-negative unit preference vector; an item's relevance is a sigmoid of its score
``e . u`` (over the table's largest norm); slot ``r`` is examined with probability ``0.85 ** r``; after every
step the preference drifts towards the mean of the clicked items. No boredom, no topics beyond the table's.
Every random number is keyed per user (:mod:`slate_rl.core.rng`), so a session does not depend on its batch.
Used by the pipeline as ``environments: {toy: {simulator: "test_toy_simulator:ToyConfig"}}`` with this
directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
import yaml
from torch import Tensor

from slate_rl.core import rng
from slate_rl.core.errors import ConfigError, SlateRLError
from slate_rl.sim.config import env_record, make_env_config
from slate_rl.sim.core import StepResult
from slate_rl.sim.protocol import PrivilegedSimulator, Simulator, make_simulator

STREAM_USER = 101
STREAM_CLICKS = 102


@dataclass(frozen=True)
class ToyConfig:
    """The toy's parameters (the pipeline reads the sizes and the item-table kind)."""

    SIMULATOR: ClassVar[str] = "test_toy_simulator:ToySimulator"

    embeddings: str = "diffuse"
    """Item-table kind."""
    num_items: int = 1000
    """Catalogue size."""
    slate_size: int = 10
    """Items per slate."""
    num_topics: int = 10
    """Topics of the item table."""
    topic_size: int = 2
    """Dimensions per topic."""
    episode_length: int = 100
    """Steps per session."""
    slope: float = 20.0
    """Steepness of the relevance sigmoid."""
    offset: float = 0.75
    """Score at which relevance is 0.5."""
    drift: float = 0.1
    """Weight of the clicked items' mean in the next preference."""

    def __post_init__(self) -> None:
        if not 1 <= self.slate_size <= self.num_items:
            raise ConfigError(f"environments.<toy>.slate_size must be in [1, num_items], got {self.slate_size}")

    @property
    def embedding_dim(self) -> int:
        return self.num_topics * self.topic_size


@dataclass
class ToyState:
    key: Tensor
    """(B,) user keys."""
    t: Tensor
    """(B,) steps taken."""
    user: Tensor
    """(B, D) preference vectors."""


class ToySimulator:
    def __init__(self, config: ToyConfig, item_embeddings: Tensor, device: torch.device) -> None:
        self.config, self.device = config, device
        self.items = item_embeddings.to(device=device, dtype=torch.float32)
        self.max_norm = float(self.items.norm(dim=1).max())
        self.examination = 0.85 ** torch.arange(config.slate_size, dtype=torch.float32, device=device)

    def _relevance(self, user: Tensor, slate: Tensor) -> Tensor:
        score = (self.items[slate] * user[:, None, :]).sum(-1) / self.max_norm
        return torch.sigmoid(self.config.slope * (score - self.config.offset))

    def _show(self, state: ToyState, slate: Tensor) -> tuple[ToyState, StepResult]:
        c = self.config
        oracle = slate < 0
        if bool(oracle.any()):
            best = (state.user @ self.items.T).topk(c.slate_size, dim=1).indices
            slate = torch.where(oracle, best, slate)
        rel = self._relevance(state.user, slate)
        prob = rel * self.examination
        clicks = rng.uniform(state.key, STREAM_CLICKS, state.t, c.slate_size) < prob
        n = clicks.sum(1, keepdim=True)
        clicked = (self.items[slate] * clicks[..., None]).sum(1) / n.clamp(min=1)
        user = torch.where(n > 0, (1 - c.drift) * state.user + c.drift * clicked, state.user)
        user = user / user.norm(dim=1, keepdim=True)
        result = StepResult(slate=slate, clicks=clicks, reward=n[:, 0].float(), truncated=state.t >= c.episode_length,
                            user_effective=state.user, relevance=rel, click_probability=prob)
        return ToyState(state.key, state.t, user), result

    def reset(self, key: Tensor) -> tuple[ToyState, StepResult]:
        key = key.to(self.device, torch.int64)
        user = rng.normal(key, STREAM_USER, 0, self.config.embedding_dim).abs()
        state = ToyState(key, torch.zeros_like(key), user / user.norm(dim=1, keepdim=True))
        slate = torch.arange(self.config.slate_size, device=self.device).expand(key.shape[0], -1)
        state, result = self._show(state, slate)
        result.reward = torch.zeros_like(result.reward)
        return state, result

    def step(self, state: ToyState, slate: Tensor, validate: bool = True) -> tuple[ToyState, StepResult]:
        slate = slate.to(self.device, torch.int64)
        if validate and (slate.ndim != 2 or slate.shape[1] != self.config.slate_size
                         or int(slate.min()) < -1 or int(slate.max()) >= self.config.num_items):
            raise SlateRLError(f"slate of shape {tuple(slate.shape)} is not (batch, {self.config.slate_size}) "
                               f"of ids in -1..{self.config.num_items - 1}")
        return self._show(ToyState(state.key, state.t + 1, state.user), slate)


TOY = {"simulator": "test_toy_simulator:ToyConfig", "episode_length": 20}


@pytest.fixture
def toy_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def _keys(n: int) -> Tensor:
    return rng.derive_key(5, torch.arange(n))


def test_an_environment_entry_naming_a_simulator_builds_it_through_the_one_factory(toy_on_path):
    config = make_env_config("toy", {"toy": TOY})
    assert isinstance(config, ToyConfig) and config.episode_length == 20
    sim = make_simulator(config)
    assert isinstance(sim, ToySimulator) and isinstance(sim, Simulator)
    assert not isinstance(sim, PrivilegedSimulator)
    assert sim.items.shape == (1000, 20)
    # the record artifacts keep (env_config) rebuilds the same simulator
    record = env_record(config)
    assert record["simulator"] == TOY["simulator"] and isinstance(make_simulator(record), ToySimulator)
    assert make_simulator(record).config == config
    assert "simulator" not in env_record(make_env_config("diffuse_mix"))


def test_bad_simulator_entries_get_one_clear_error(toy_on_path):
    with pytest.raises(ConfigError, match="environments.toy.simulator: cannot import module 'no_such_module'"):
        make_env_config("toy", {"toy": {"simulator": "no_such_module:Config"}})
    with pytest.raises(ConfigError, match="write it as 'module:name'"):
        make_env_config("toy", {"toy": {"simulator": "test_toy_simulator.ToyConfig"}})
    with pytest.raises(ConfigError, match="not a simulator config"):
        make_env_config("toy", {"toy": {"simulator": "test_toy_simulator:ToySimulator"}})
    with pytest.raises(ConfigError, match="give one of them"):
        make_env_config("toy", {"toy": {**TOY, "base": "focused_mix"}})
    with pytest.raises(ConfigError, match="unknown config key 'environments.toy.boredom_window'"):
        make_env_config("toy", {"toy": {**TOY, "boredom_window": 3}})


def test_the_toy_keeps_the_protocol_promises(toy_on_path):
    sim = make_simulator(make_env_config("toy", {"toy": TOY}))
    keys = _keys(64)
    state, obs = sim.reset(keys)
    assert obs.slate.shape == (64, 10) and float(obs.reward.sum()) == 0
    oracle_total = random_total = torch.zeros(64)
    oracle_state, random_state = state, state
    gen = torch.Generator().manual_seed(0)
    for t in range(20):
        oracle_state, o = sim.step(oracle_state, torch.full((64, 10), -1))
        random_slate = torch.stack([torch.randperm(1000, generator=gen)[:10] for _ in range(64)])
        random_state, r = sim.step(random_state, random_slate)
        oracle_total, random_total = oracle_total + o.reward, random_total + r.reward
        assert bool((o.slate >= 0).all()) and bool(o.truncated.all()) == (t == 19)
    assert float(oracle_total.mean()) > 3 * float(random_total.mean())
    # a user's session does not depend on the batch it shares
    alone_state, _ = sim.reset(keys[7:8])
    _, alone = sim.step(alone_state, torch.full((1, 10), -1))
    _, together = sim.step(state, torch.full((64, 10), -1))
    assert torch.equal(alone.clicks[0], together.clicks[7])
    with pytest.raises(SlateRLError, match="ids in -1..999"):
        sim.step(state, torch.full((64, 10), 1000))


def test_what_needs_topicrec_refuses_the_toy_by_name(toy_on_path):
    from slate_rl.online.slateq import ClickModel
    from slate_rl.sim.gym_env import TopicRecEnv

    with pytest.raises(ConfigError, match="SlateQ's target uses TopicRec's click model; ToySimulator has none"):
        ClickModel.of(make_simulator(dict(TOY)))
    with pytest.raises(ConfigError, match="wraps TopicRec; ToySimulator has no Gymnasium environment"):
        TopicRecEnv(dict(TOY))


def test_the_toy_config_plans_torch_free_except_its_own_module(toy_on_path):
    from slate_rl.pipeline import env_config

    assert env_config({"environments": {"toy": TOY}}, "toy").embeddings == "diffuse"
    assert [f.name for f in fields(ToyConfig)][:2] == ["embeddings", "num_items"]


@pytest.mark.e2e
def test_the_tiny_pipeline_runs_on_the_toy_simulator(tmp_path):
    """The card's chain (logs, embeddings, GeMS, SAC+GeMS, datasets, TD3+BC, aggregate) on the toy: no file of
    the package names it."""
    from test_workflow import TINY, snakemake

    overlay = tmp_path / "toy.yaml"
    overlay.write_text(yaml.safe_dump({"envs": ["toy"], "environments": {"toy": TOY}}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent),
                                                                      os.environ.get("PYTHONPATH")]))}
    res = snakemake("results/toy/td3bc.json", "--cores", "2", "--configfile", str(TINY), str(overlay),
                    cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / "results/toy/td3bc.json").read_text())
    assert result["env"] == "toy" and np.isfinite(result["return_mean"])
    logs = np.load(tmp_path / "data/logs/toy.npz")
    assert logs["slates"].shape[1] == 20  # the toy's episode length, not TopicRec's
    recorded = json.loads((tmp_path / "data/offline/toy/expert.json").read_text())["env_config"]
    assert recorded == {**dataclasses.asdict(ToyConfig(episode_length=20)), "simulator": TOY["simulator"]}
