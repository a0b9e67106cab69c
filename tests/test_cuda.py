"""The device=cuda paths against the CPU: simulator batches, a GeMS step, a SAC+GeMS update and offline
updates. Marked ``cuda`` (``pytest -m cuda``, what scripts/gpu-check.sh runs); each test skips
without a CUDA device, so the default run on a CPU-only machine reports them as skipped."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from slate_rl.models.gems import GeMS, gems_loss
from slate_rl.models.rankers import GeMSRanker
from slate_rl.offline.registry import make_algo
from slate_rl.online.registry import build_agent
from slate_rl.online.rollouts import run_agent_sessions, user_keys
from slate_rl.sim.policies import make_policy
from slate_rl.sim.protocol import make_simulator
from slate_rl.sim.rollout import run_sessions

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (scripts/gpu-check.sh)")]
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _full_precision_matmuls():
    """Compare float32 with float32: no TF32 on Ampere and later."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.parametrize("policy", ["random", "eps-greedy", "oracle"])
def test_simulator_batch_on_cuda_equals_cpu(policy):
    """Counter-based draws: the same sessions on both devices; scores may differ in the last float bit,
    which can flip a click whose uniform draw sits at its probability (a few per million)."""
    runs = [run_sessions(make_simulator("focused_topdown", device=device), make_policy(policy, 1000, 10),
                         512, seed=5, batch_size=512, record=True) for device in ("cpu", CUDA)]
    cpu, gpu = runs
    if policy == "random":  # slates depend on the draws only
        assert np.array_equal(cpu.slates, gpu.slates)
    assert (cpu.slates == gpu.slates).mean() > 0.999
    assert (cpu.clicks == gpu.clicks).mean() > 0.999
    assert abs(cpu.returns.mean() - gpu.returns.mean()) <= 0.01 * max(abs(cpu.returns.mean()), 1.0)


def test_gems_step_on_cuda_matches_cpu():
    torch.manual_seed(0)
    model = GeMS(latent_dim=8)
    slates, clicks = torch.randint(0, 1000, (64, 10)), torch.rand(64, 10) < 0.2
    params = []
    for device in ("cpu", CUDA):
        m = copy.deepcopy(model).to(device)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        loss, _ = gems_loss(m, slates.to(device), clicks.to(device), beta=1.0, lambda_click=0.5, sample=False)
        opt.zero_grad()
        loss.backward()
        opt.step()
        params.append([p.detach().cpu() for p in m.parameters()])
    for a, b in zip(*params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_sac_gems_update_on_cuda():
    sim = make_simulator("focused_topdown", device=CUDA)
    torch.manual_seed(0)
    gems = GeMSRanker(GeMS(latent_dim=8), torch.zeros(8), torch.ones(8) * 2)
    agent = build_agent("sac_gems_d8_beta1_lc0.5_scratch_s1", sim.items.cpu(), 1000, 10, 100, gems,
                        belief_table="ranker").to(CUDA)
    _, episodes = run_agent_sessions(sim, agent, user_keys(3, 0, 8, sim.device), "train")
    before = {n: p.detach().clone() for n, p in agent.named_parameters() if p.requires_grad}
    metrics = agent.update(episodes)
    assert metrics and all(np.isfinite(v) for v in metrics.values())
    assert all(p.device.type == CUDA.type for p in agent.parameters())
    assert any(not torch.equal(p, before[n]) for n, p in agent.named_parameters() if n in before)


@pytest.mark.parametrize("name", ["bc", "iql"])  # no random draws in their updates: both devices see the same numbers
def test_offline_updates_on_cuda_match_cpu(name):
    g = torch.Generator().manual_seed(0)
    batches = [{"observations": torch.randn(256, 20, generator=g), "actions": torch.rand(256, 32, generator=g) * 2 - 1,
                "rewards": torch.rand(256, generator=g), "next_observations": torch.randn(256, 20, generator=g),
                "dones": (torch.rand(256, generator=g) < 0.1).float()} for _ in range(3)]
    torch.manual_seed(0)
    algo = make_algo(name, 20, torch.zeros(32), torch.ones(32), 0.99, 100)
    results = []
    for device in ("cpu", CUDA):
        a = copy.deepcopy(algo).to(device)
        for batch in batches:
            metrics = a.update({k: v.to(device) for k, v in batch.items()})
        assert all(v.device.type == torch.device(device).type for v in metrics.values())
        results.append([p.detach().cpu() for p in a.parameters()])
    for x, y in zip(*results, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)
