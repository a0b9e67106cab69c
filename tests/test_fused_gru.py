"""The CPU GRU unroll used by belief encoders (models/belief.py:GRUSequence) against nn.GRU.

The fused path exists for speed only: every value it produces (beliefs, gradients, a whole SAC update)
must equal nn.GRU's up to floating-point rounding."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slate_rl.models.belief import BeliefEncoder
from slate_rl.models.gems import GeMS
from slate_rl.models.rankers import GeMSRanker
from slate_rl.online.sac import SAC


def _grads(enc: BeliefEncoder, slates: torch.Tensor, clicks: torch.Tensor, fused: bool, weights: torch.Tensor):
    enc.fused = fused
    enc.zero_grad(set_to_none=True)
    out = enc(slates, clicks)
    (out * weights).sum().backward()
    return out.detach(), {name: p.grad.detach().clone() for name, p in enc.named_parameters()}


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 6), steps=st.integers(1, 12), hidden=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_fused_gru_matches_nn_gru_in_float64(batch, steps, hidden, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    enc = BeliefEncoder(50, 4, 3, hidden).double()
    slates = torch.randint(0, 50, (batch, steps, 3), generator=gen)
    clicks = torch.rand(batch, steps, 3, generator=gen) < 0.3
    weights = torch.randn(batch, steps, hidden, generator=gen, dtype=torch.float64)
    out_f, g_f = _grads(enc, slates, clicks, True, weights)
    out_n, g_n = _grads(enc, slates, clicks, False, weights)
    torch.testing.assert_close(out_f, out_n, rtol=0, atol=1e-12)
    for name in g_n:
        torch.testing.assert_close(g_f[name], g_n[name], rtol=1e-10, atol=1e-12, msg=name)


def test_fused_gru_passes_gradcheck():
    torch.manual_seed(0)
    gru = torch.nn.GRU(5, 4).double()
    gi = torch.randn(6, 3, 12, dtype=torch.float64, requires_grad=True)
    from slate_rl.models.belief import GRUSequence
    w = gru.weight_hh_l0.detach().clone().requires_grad_(True)
    b = gru.bias_hh_l0.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(GRUSequence.apply, (gi, w, b))


def test_sac_update_with_the_fused_gru_equals_the_nn_gru_update():
    """Two SAC+GeMS agents from the same state take 3 updates on the same episodes; one unrolls its
    GRUs with nn.GRU, the other with the fused path: losses and every parameter agree (float64, where
    Adam's normalisation cannot blow rounding differences of near-zero gradients up to the step size)."""
    torch.manual_seed(0)
    gems = GeMSRanker(GeMS(latent_dim=8), torch.zeros(8), torch.ones(8))
    table = gems.gems.items.weight.detach().clone()
    agent = SAC(gems, 1000, table.shape[1], 10, item_table=table).double()
    twin = copy.deepcopy(agent)
    gen = torch.Generator().manual_seed(1)
    ep = {"slates": torch.randint(0, 1000, (20, 101, 10), generator=gen),
          "clicks": (torch.rand(20, 101, 10, generator=gen) < 0.1).float(),
          "actions": torch.randn(20, 100, 8, generator=gen, dtype=torch.float64),
          "rewards": torch.rand(20, 100, generator=gen, dtype=torch.float64)}
    results = []
    for model, fused in ((agent, True), (twin, False)):
        for enc in (model.actor_belief, model.critic.belief, model.critic_target.belief):
            enc.fused = fused
        torch.manual_seed(5)
        results.append([model.update(ep) for _ in range(3)])
    for m_f, m_n in zip(*results, strict=True):
        for key in m_n:
            assert m_f[key] == pytest.approx(m_n[key], rel=1e-9, abs=1e-10), key
    for (name, p_f), p_n in zip(agent.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p_f, p_n, rtol=1e-8, atol=1e-10, msg=name)
