"""The defaults reproduce the published GeMS code (warm-up counted in sessions, SAC's
log-probability and update order, GeMS's training sample); each correction is a named switch."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from slate_rl.core.config import replace
from slate_rl.models.config import GeMSConfig, gems_config_from_tag
from slate_rl.models.gems import GeMS, gems_loss
from slate_rl.models.rankers import GeMSRanker
from slate_rl.online.base import Agent
from slate_rl.online.loop import OnlineConfig, train_online
from slate_rl.online.rollouts import run_agent_sessions, user_keys
from slate_rl.online.sac import SAC, SACConfig
from slate_rl.sim.config import make_env_config
from slate_rl.sim.protocol import make_simulator


class _CountingAgent(Agent):
    """Random slates; records the session count at each update and how each session acted."""

    name = "counting"
    action_dim = 10

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.updates_at: list[int] = []
        self.modes: list[str] = []
        self.widths: list[float] = []

    def _slate(self, b: int) -> torch.Tensor:
        return torch.stack([torch.randperm(1000)[:10] for _ in range(b)])

    def act(self, slates, clicks, hidden, deterministic=False, privileged=None):
        if hidden is None:
            self.modes.append("policy")
        s = self._slate(slates.shape[0])
        return s, s.float(), 0

    def random_act(self, slates, clicks, hidden, width=1.0):
        if hidden is None:
            self.modes.append("random")
            self.widths.append(width)
        s = self._slate(slates.shape[0])
        return s, s.float(), 0

    def update(self, episodes):
        self.updates_at.append(len(self.modes))
        return {"loss": 0.0}


def test_no_gradient_step_before_session_2000_on_the_paper_schedule(tmp_path) -> None:
    """Paper schedule (1 session + 1 update per step, warm-up 2,000 sessions): sessions 0..1999 act
    randomly and no update happens until 2,000 sessions were collected; every later step updates once."""
    cfg = OnlineConfig(total_steps=2003, batch_size=1, val_interval=10**6, checkpoint_interval=10**6)
    assert (cfg.warmup_sessions, cfg.sessions_per_step, cfg.updates_per_step) == (2000, 1, 1)
    sim = make_simulator(make_env_config("focused_topdown", episode_length=1))
    agent = _CountingAgent()
    train_online(sim, agent, cfg, seed=0, save_best=lambda a, s: None, last_path=tmp_path / "last.ckpt",
                 progress=False)
    # Validation sessions (deterministic, at the end) are not training sessions.
    modes = agent.modes[:2003]
    assert modes[:2000] == ["random"] * 2000 and modes[2000:] == ["policy"] * 3
    assert agent.updates_at == [2001, 2002, 2003]
    assert set(agent.widths) == {0.5}  # the published warm-up draws in the middle half of the box


def test_warmup_actions_lie_in_the_middle_half_of_the_box() -> None:
    """centre + scale * (U(0,1) - 0.5) as published: uniform over centre +- scale / 2."""
    sim = make_simulator("focused_topdown")
    agent = _sac()
    torch.manual_seed(0)
    _, eps = run_agent_sessions(sim, agent, user_keys(0, 0, 20, sim.device), "random", random_width=0.5)
    u = (eps["actions"] - agent.ranker.action_center) / agent.ranker.action_scale
    assert float(u.abs().max()) <= 0.5 and float(u.abs().max()) > 0.49
    assert abs(float(u.abs().mean()) - 0.25) < 0.01  # uniform on [-0.5, 0.5]: E|u| = 0.25


def _sac(scale_term: bool = False, seed: int = 0) -> SAC:
    torch.manual_seed(seed)
    ranker = GeMSRanker(GeMS(latent_dim=8), torch.linspace(-1, 1, 8), torch.full((8,), 4.3))
    return SAC(ranker, 1000, config=SACConfig(logprob_scale_term=scale_term))


def test_sac_log_probability_is_the_published_formula() -> None:
    """log pi = sum_j [log N(u_j; mean_j, std_j) - log(1 - tanh(u_j)^2 + 1e-6)] (published), without
    - sum log(action_scale); the switch adds exactly that term."""
    agent = _sac()
    beliefs = torch.randn(64, 20)
    torch.manual_seed(1)
    action, logp = agent.policy(beliefs)
    mean, log_std = agent.actor(beliefs).chunk(2, dim=-1)
    std = log_std.clamp(-20, 2).exp()
    torch.manual_seed(1)
    u = torch.distributions.Normal(mean, std).rsample()
    squashed = torch.tanh(u)
    published = (torch.distributions.Normal(mean, std).log_prob(u) - torch.log(1 - squashed.pow(2) + 1e-6)).sum(1)
    torch.testing.assert_close(logp, published, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(action, agent.ranker.action_center + agent.ranker.action_scale * squashed)
    corrected = _sac(scale_term=True)
    corrected.load_state_dict(agent.state_dict())
    torch.manual_seed(1)
    _, logp_c = corrected.policy(beliefs)
    torch.testing.assert_close(logp_c, logp - 8 * math.log(4.3), rtol=1e-5, atol=1e-4)


def test_sac_update_steps_the_critic_before_the_actor_loss() -> None:
    """As published: the critic steps first; the actor's loss then uses the updated Q networks, at
    the beliefs computed before the step; the target uses the online critic GRU (detached)."""
    sim = make_simulator("focused_topdown")
    agent = _sac()
    _, eps = run_agent_sessions(sim, agent, user_keys(3, 0, 4, sim.device), "train")
    reference = copy.deepcopy(agent)
    torch.manual_seed(5)
    agent.update(eps)
    # By hand, on the copy.
    torch.manual_seed(5)
    r = reference
    b_actor = r.actor_belief(eps["slates"], eps["clicks"])
    b_critic = r.critic.belief(eps["slates"], eps["clicks"])
    with torch.no_grad():
        alpha = r.log_alpha.exp()
        na, nlogp = r.policy(b_actor[:, 1:])
        tq = torch.minimum(*r.critic_target.q(b_critic[:, 1:], na))
        not_done = torch.ones_like(eps["rewards"])
        not_done[:, -1] = 0
        y = eps["rewards"] + 0.8 * not_done * (tq - alpha * nlogp)
    q1, q2 = r.critic.q(b_critic[:, :-1], eps["actions"])
    r.critic_opt.zero_grad()
    (0.5 * (F.mse_loss(q1, y) + F.mse_loss(q2, y))).backward()
    r.critic_opt.step()
    a, logp = r.policy(b_actor[:, :-1])
    q_new = torch.minimum(*r.critic.q(b_critic[:, :-1].detach(), a))
    r.actor_opt.zero_grad()
    r.critic.zero_grad()
    (alpha * logp - q_new).mean().backward()
    r.actor_opt.step()
    r.alpha_opt.zero_grad()
    (-(r.log_alpha.exp() * (logp.detach() + r.target_entropy)).mean()).backward()
    r.alpha_opt.step()
    for (name, p), q in zip(agent.named_parameters(), r.parameters(), strict=True):
        if not name.startswith("critic_target"):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_gems_training_sample_uses_the_variance_by_default() -> None:
    """z = mu + eps * exp(logvar) (published) by default; exp(logvar / 2) with sample_scale=std.
    Checked through the decoder input: with the same eps the two samples differ as var vs std."""
    torch.manual_seed(0)
    model = GeMS(latent_dim=4)
    slates, clicks = torch.randint(0, 1000, (32, 10)), torch.rand(32, 10) < 0.3
    seen: list[torch.Tensor] = []
    handle = model.decoder.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
    mu, logvar = model.encode(slates, clicks)
    for scale in ("variance", "std"):
        torch.manual_seed(1)
        gems_loss(model, slates, clicks, 1.0, 0.5, sample_scale=scale)
    handle.remove()
    torch.manual_seed(1)
    eps = torch.randn_like(mu)
    torch.testing.assert_close(seen[0], mu + eps * logvar.exp())
    torch.testing.assert_close(seen[1], mu + eps * (0.5 * logvar).exp())
    assert GeMSConfig().sample_scale == "variance"
    std = replace(GeMSConfig(), sample_scale="std")
    assert std.tag.endswith("_std") and gems_config_from_tag(std.tag) == std
    assert gems_config_from_tag(GeMSConfig().tag) == GeMSConfig()
    with pytest.raises(Exception, match="sample_scale"):
        replace(GeMSConfig(), sample_scale="var")


@pytest.mark.parametrize("warmup", [True, False])
def test_on_policy_agents_follow_their_warmup_flag(tmp_path, warmup: bool) -> None:
    """Published REINFORCE (``on_policy_warmup``) acts randomly in the warm-up and learns from those
    sessions; an on-policy agent without the flag acts with its policy from the start. Both update
    on every step (no replay)."""
    cfg = OnlineConfig(total_steps=5, warmup_sessions=3, batch_size=1, val_interval=10**6, checkpoint_interval=10**6)
    sim = make_simulator(make_env_config("focused_topdown", episode_length=1))
    agent = _CountingAgent()
    agent.on_policy, agent.on_policy_warmup = True, warmup
    train_online(sim, agent, cfg, seed=0, save_best=lambda a, s: None, last_path=tmp_path / "last.ckpt",
                 progress=False)
    assert agent.modes[:5] == (["random"] * 3 + ["policy"] * 2 if warmup else ["policy"] * 5)
    assert agent.updates_at == [1, 2, 3, 4, 5]


def test_published_reinforce_warms_up_and_corrected_does_not() -> None:
    from slate_rl.online.reinforce import Reinforce

    assert Reinforce(1000, variant="published").on_policy_warmup
    assert not Reinforce(1000, variant="corrected").on_policy_warmup


class _Stop(Exception):
    """Raised by the captured fit: the test needs the batches, not a trained GeMS."""


@pytest.mark.parametrize("shuffle", [None, "--shuffle"])
def test_gems_pretraining_walks_the_slates_in_the_published_order_by_default(tmp_path, monkeypatch, shuffle) -> None:
    """The published DataLoader does not shuffle: every epoch the training sessions in turn, each session's
    slates in step order. ``gems.shuffle: true`` (``--shuffle``) draws a seeded order per epoch instead."""
    import numpy as np

    from slate_rl.cli import main
    from slate_rl.data.logs import LoggedSessions, save_logs
    from slate_rl.sim.policies import EpsilonGreedyOracle
    from slate_rl.sim.rollout import run_sessions
    from slate_rl.stages import pretrain_gems

    assert GeMSConfig().shuffle is False
    sim = make_simulator("focused_topdown")
    out = run_sessions(sim, EpsilonGreedyOracle(1000, 10, 0.5), 20, seed=3, batch_size=20, record=True)
    logs = LoggedSessions(out.slates, out.clicks, out.reset_slates, out.reset_clicks, out.returns.astype(np.float32),
                          {"env": "focused_topdown", "env_config": sim.config.__dict__})
    save_logs(tmp_path / "logs.npz", logs)
    seen = []

    def capture(system, train, val, **kwargs):
        seen.append([b["slates"] for b in train])
        seen.append([b["slates"] for b in train])  # the second epoch
        raise _Stop

    monkeypatch.setattr(pretrain_gems, "fit", capture)
    with pytest.raises(_Stop):
        main(["pretrain-gems", "--logs", str(tmp_path / "logs.npz"), "--latent-dim", "4", "--epochs", "2",
              "--batch-size", "64", "--device", "cpu", "--no-progress", "--logger-mode", "disabled",
              "--output", str(tmp_path / "g.ckpt"), "--metrics", str(tmp_path / "g.json"),
              *([shuffle] if shuffle else [])])
    in_order = pretrain_gems.examples(logs, slice(2, None))["slates"]  # val_fraction 0.1: sessions 0-1
    for epoch in seen:
        walked = torch.cat(epoch)
        assert sorted(map(tuple, walked.tolist())) == sorted(map(tuple, in_order.tolist()))  # every slate once
        assert torch.equal(walked, in_order) == (shuffle is None)
    assert torch.equal(torch.cat(seen[0]), torch.cat(seen[1])) == (shuffle is None)
