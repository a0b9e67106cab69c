"""The simulator protocol: a second simulator (``tests/plugins/toy_simulator.py``, one file, no edit of the package)
is built by the one factory, keeps the protocol's promises, is refused by what needs TopicRec, and runs the tiny
pipeline's chain."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import fields

import numpy as np
import pytest
import torch
from torch import Tensor
from toy_simulator import ToyConfig, ToySimulator

from slate_rl.core import rng
from slate_rl.core.errors import ConfigError, SlateRLError
from slate_rl.sim.config import env_record, make_env_config
from slate_rl.sim.protocol import PrivilegedSimulator, Simulator, make_simulator

TOY = {"simulator": "toy_simulator:ToyConfig", "episode_length": 20}


def _keys(n: int) -> Tensor:
    return rng.derive_key(5, torch.arange(n))


def test_an_environment_entry_naming_a_simulator_builds_it_through_the_one_factory():
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


def test_bad_simulator_entries_get_one_clear_error():
    with pytest.raises(ConfigError, match="environments.toy.simulator: cannot import module 'no_such_module'"):
        make_env_config("toy", {"toy": {"simulator": "no_such_module:Config"}})
    with pytest.raises(ConfigError, match="write it as 'module:name'"):
        make_env_config("toy", {"toy": {"simulator": "toy_simulator.ToyConfig"}})
    with pytest.raises(ConfigError, match="not a simulator config"):
        make_env_config("toy", {"toy": {"simulator": "toy_simulator:ToySimulator"}})
    with pytest.raises(ConfigError, match="give one of them"):
        make_env_config("toy", {"toy": {**TOY, "base": "focused_mix"}})
    with pytest.raises(ConfigError, match="unknown config key 'environments.toy.boredom_window'"):
        make_env_config("toy", {"toy": {**TOY, "boredom_window": 3}})


def test_the_toy_keeps_the_protocol_promises():
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


def test_what_needs_topicrec_refuses_the_toy_by_name():
    from slate_rl.online.slateq import ClickModel
    from slate_rl.sim.gym_env import TopicRecEnv

    with pytest.raises(ConfigError, match="SlateQ's target uses TopicRec's click model; ToySimulator has none"):
        ClickModel.of(make_simulator(dict(TOY)))
    with pytest.raises(ConfigError, match="wraps TopicRec; ToySimulator has no Gymnasium environment"):
        TopicRecEnv(dict(TOY))


def test_the_workflow_reads_the_toy_environment_config():
    from slate_rl.pipeline import env_config

    assert env_config({"environments": {"toy": TOY}}, "toy").embeddings == "diffuse"
    assert [f.name for f in fields(ToyConfig)][:2] == ["embeddings", "num_items"]


@pytest.mark.e2e
def test_the_tiny_pipeline_runs_on_the_toy_simulator(tmp_path):
    """The card's chain (logs, embeddings, GeMS, SAC+GeMS, datasets, TD3+BC, aggregate) on the toy: no file of
    the package names it."""
    from test_workflow import tiny_with_plugins

    res = tiny_with_plugins(tmp_path, "results/toy/td3bc.json", {"envs": ["toy"], "environments": {"toy": TOY}})
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / "results/toy/td3bc.json").read_text())
    assert result["env"] == "toy" and np.isfinite(result["return_mean"])
    logs = np.load(tmp_path / "data/logs/toy.npz")
    assert logs["slates"].shape[1] == 20  # the toy's episode length, not TopicRec's
    recorded = json.loads((tmp_path / "data/offline/toy/expert.json").read_text())["env_config"]
    assert recorded == {**dataclasses.asdict(ToyConfig(episode_length=20)), "simulator": TOY["simulator"]}
