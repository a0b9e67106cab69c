"""Multi-seed SAC training (slate_rl.online.multiseed): the same maths as SAC.update per seed, per-seed
RNG streams independent of the number of seeds, seeds that do not influence each other, per-seed
checkpoints in the single-seed format, resume."""

from __future__ import annotations

import copy

import pytest
import torch

from slate_rl.core.errors import ConfigError
from slate_rl.models.belief import BeliefEncoder
from slate_rl.models.gems import GeMS
from slate_rl.models.rankers import GeMSRanker
from slate_rl.models.stacked import StackedBeliefEncoder, StackedLinear
from slate_rl.online.config import OnlineConfig, SACConfig
from slate_rl.online.multiseed import StackedSAC, seed_generator, train_seeds
from slate_rl.online.registry import make_agent
from slate_rl.online.sac import SAC
from slate_rl.sim.config import make_env_config
from slate_rl.sim.gym_env import build_simulator

ITEMS, ITEM_DIM, K, LATENT = 40, 4, 3, 4
TAG = "sac_gems_d4_beta1_lc0.5_scratch_s0"
SMALL = SACConfig(hidden=16, belief_dim=6)


def _ranker(num_items: int = ITEMS, item_dim: int = ITEM_DIM, k: int = K) -> GeMSRanker:
    torch.manual_seed(123)
    gems = GeMS(num_items, item_dim, k, LATENT, encoder_hidden=(8,), decoder_hidden=(8,))
    return GeMSRanker(gems, torch.zeros(LATENT), torch.full((LATENT,), 2.0))


def _sac(seed: int, ranker: GeMSRanker, num_items: int = ITEMS, k: int = K, dtype=torch.float32) -> SAC:
    torch.manual_seed(seed)
    table = torch.randn(num_items, ranker.gems.item_dim)
    agent = make_agent(TAG, ranker, table, num_items, k, SMALL)
    assert isinstance(agent, SAC)
    return agent.to(dtype)


def _episodes(seed: int, batch: int = 3, steps: int = 5, dtype=torch.float64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"slates": torch.randint(0, ITEMS, (batch, steps + 1, K), generator=g),
            "clicks": torch.rand(batch, steps + 1, K, generator=g) < 0.3,
            "actions": torch.randn(batch, steps, LATENT, generator=g, dtype=dtype),
            "rewards": torch.rand(batch, steps, generator=g, dtype=dtype)}


def _with_generator_noise(agent: SAC, generator: torch.Generator) -> SAC:
    """``agent`` drawing its noise from ``generator`` as seed's slice of a StackedSAC does."""
    agent._noise = lambda mean: torch.randn(mean.shape, generator=generator, dtype=mean.dtype)  # type: ignore[method-assign]
    return agent


def _assert_state_close(a: dict, b: dict, rtol: float, atol: float) -> None:
    assert a["modules"].keys() == b["modules"].keys()
    for k in a["modules"]:
        torch.testing.assert_close(a["modules"][k], b["modules"][k], rtol=rtol, atol=atol, msg=k)
    for name in a["optimizers"]:
        sa, sb = a["optimizers"][name], b["optimizers"][name]
        assert sa["param_groups"] == sb["param_groups"], name
        assert sa["state"].keys() == sb["state"].keys(), name
        for idx in sa["state"]:
            for k in sa["state"][idx]:
                torch.testing.assert_close(sa["state"][idx][k], sb["state"][idx][k], rtol=rtol, atol=atol,
                                           msg=f"{name}.{idx}.{k}")


# ---------------------------------------------------------------------------------------------- the maths
def test_stacked_layers_equal_their_modules_forward_and_backward():
    torch.manual_seed(0)
    encs = [BeliefEncoder(ITEMS, ITEM_DIM, K, 6).double() for _ in range(3)]
    lins = [torch.nn.Linear(6, 5).double() for _ in range(3)]
    stacked, stacked_lin = StackedBeliefEncoder(encs), StackedLinear(lins)
    slates = torch.randint(0, ITEMS, (3, 2, 7, K))
    clicks = torch.rand(3, 2, 7, K) < 0.4
    out = stacked(slates, clicks)
    y = stacked_lin(out)
    (y.square().sum() + out.sum()).backward()
    for s, (enc, lin) in enumerate(zip(encs, lins, strict=True)):
        ref = enc(slates[s], clicks[s])
        (lin(ref).square().sum() + ref.sum()).backward()
        torch.testing.assert_close(out[s], ref, rtol=1e-12, atol=1e-12)
        for name, p in enc.named_parameters():
            group, key = name.split(".")
            torch.testing.assert_close(getattr(stacked, group)[key].grad[s], p.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(stacked_lin.weight.grad[s], lin.weight.grad, rtol=1e-10, atol=1e-12)
        # one step of the acting path (nn.GRU's step) from a non-zero belief
        h = torch.randn(2, 6, dtype=torch.float64)
        step = stacked.step(slates[:, :, 0], clicks[:, :, 0], h.expand(3, 2, 6))
        torch.testing.assert_close(step[s], enc.step(slates[s, :, 0], clicks[s, :, 0], h), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("num_seeds", [1, 3])
def test_each_seed_of_a_stacked_update_is_sac_update(num_seeds):
    """Three updates of the stacked agent equal, seed by seed, SAC.update on the same episodes and noise
    (float64): networks, targets, temperature, Adam moments and counters."""
    ranker = _ranker().double()
    seeds = [5, 6, 7][:num_seeds]
    agents = [_sac(s, ranker, dtype=torch.float64) for s in seeds]
    refs = [_with_generator_noise(copy.deepcopy(a), seed_generator(s)) for a, s in zip(agents, seeds, strict=True)]
    stacked = StackedSAC(agents, [seed_generator(s) for s in seeds]).double()
    for update in range(3):
        eps = [_episodes(100 * update + s) for s in seeds]
        per_seed = stacked.update_seeds({k: torch.stack([e[k] for e in eps]) for k in eps[0]})
        for i, (ref, ep) in enumerate(zip(refs, eps, strict=True)):
            expected = ref.update(ep)
            assert per_seed[i].keys() == expected.keys()
            for k in expected:
                assert per_seed[i][k] == pytest.approx(expected[k], rel=1e-9, abs=1e-12), k
    for i, ref in enumerate(refs):
        _assert_state_close(stacked.seed_state_dict(i), ref.state_dict(), rtol=1e-9, atol=1e-12)
        assert int(ref.updates) == 3


def test_a_seeds_random_stream_does_not_depend_on_the_number_of_seeds():
    ranker = _ranker()
    alone = StackedSAC([_sac(1, ranker)], [seed_generator(1)])
    group = StackedSAC([_sac(s, ranker) for s in (0, 1, 2)], [seed_generator(s) for s in (0, 1, 2)])
    for _ in range(2):
        assert torch.equal(alone._noise(torch.zeros(1, 4, 5, LATENT))[0], group._noise(torch.zeros(3, 4, 5, LATENT))[1])
        slates, clicks = torch.zeros(12, K, dtype=torch.int64), torch.zeros(12, K, dtype=torch.bool)
        a1 = alone.random_act(slates[:4], clicks[:4], None, 0.5)[1]
        a3 = group.random_act(slates, clicks, None, 0.5)[1]
        assert torch.equal(a1, a3[4:8])
    # acting: seed 1's belief, noise and action are the same alone and in the group
    slates = torch.randint(0, ITEMS, (3 * 4, K))
    clicks = torch.rand(3 * 4, K) < 0.3
    s1, act1, h1 = alone.act(slates[4:8], clicks[4:8], None)
    s3, act3, h3 = group.act(slates, clicks, None)
    torch.testing.assert_close(act1, act3[4:8], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(h1[0], h3[1], rtol=1e-6, atol=1e-6)
    assert torch.equal(seed_generator(1).get_state(), seed_generator(1).get_state())
    assert not torch.equal(seed_generator(1).get_state(), seed_generator(2).get_state())


def test_multiseed_refuses_other_agents_and_bad_input(tmp_path):
    sim = build_simulator(make_env_config("focused_topdown", num_items=ITEMS, slate_size=K, episode_length=4))
    ranker = _ranker()
    cfg = OnlineConfig(total_steps=1, warmup_sessions=0, val_interval=1, val_sessions=2)
    torch.manual_seed(0)
    reinforce = make_agent("reinforce", None, torch.randn(ITEMS, ITEM_DIM), ITEMS, K, item_dim=ITEM_DIM)
    with pytest.raises(ConfigError, match="not Reinforce"):
        train_seeds(sim, [reinforce], cfg, [0], lambda i, a, s: None, [tmp_path / "l.ckpt"], progress=False)
    with pytest.raises(ConfigError, match="distinct seeds"):
        train_seeds(sim, [_sac(0, ranker), _sac(0, ranker)], cfg, [0, 0], lambda i, a, s: None,
                    [tmp_path / "a.ckpt", tmp_path / "b.ckpt"], progress=False)
    with pytest.raises(ConfigError, match="one seed, one last path"):
        train_seeds(sim, [_sac(0, ranker)], cfg, [0, 1], lambda i, a, s: None, [tmp_path / "a.ckpt"], progress=False)
