"""Online agents: one conformance test for all, no off-by-one leakage, checkpoints, resume, build_agent's errors;
the published details that are the defaults (SAC's log-probability and update order, REINFORCE's and the
on-policy agents' warm-up, each correction a named switch) and the online loop's published schedule (no gradient
step before session 2000, warm-up actions in the middle half of the box)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slate_rl.core.errors import ArtifactError, ConfigError
from slate_rl.data.buffer import EpisodeBuffer
from slate_rl.models.gems import GeMS
from slate_rl.models.rankers import GeMSRanker
from slate_rl.online.base import Agent
from slate_rl.online.config import AGENTS as BUILT_IN
from slate_rl.online.config import (
    AgentKind,
    ReinforceConfig,
    SACConfig,
    SlateQConfig,
    agent_kind,
    parse_agent_tag,
    variant_tag,
)
from slate_rl.online.loop import OnlineConfig, train_online
from slate_rl.online.registry import agent_from_checkpoint, build_agent, load_agent, save_agent
from slate_rl.online.rollouts import run_agent_sessions, user_keys
from slate_rl.online.sac import SAC
from slate_rl.online.slateq import ClickModel
from slate_rl.sim.config import make_env_config
from slate_rl.sim.protocol import make_simulator

GEMS_TAG = "d8_beta1_lc0.5_scratch_s1"


def kind_tags(kind: AgentKind) -> list[str]:
    """Every tag of a registered agent (both variants where it has them), over a d = 8 GeMS where it needs one."""
    return [variant_tag(kind.name, v, GEMS_TAG) for v in (("published", "corrected") if kind.variants else
                                                          ("published",))]


AGENTS = [tag for kind in BUILT_IN for tag in kind_tags(kind)]
"""The built-in agents' tags: each gets the conformance checks (a plugin's agent calls :func:`check_conformance`)."""


@pytest.fixture(scope="module")
def sim():
    return make_simulator("focused_topdown")


def _agent(tag, sim, seed=0, belief_table="ranker"):
    """Agent ``tag`` in its registration's small version, with everything an agent may need."""
    torch.manual_seed(seed)
    gems = GeMSRanker(GeMS(latent_dim=8), torch.zeros(8), torch.ones(8) * 2)
    mf = torch.rand(1000, 20)
    kind = agent_kind(tag)
    return build_agent(tag, sim.items, 1000, 10, 100, gems, mf, kind.config(**kind.small), belief_table,
                       ClickModel.of(sim))


def _episodes(sim, agent, n=6, seed=3):
    _, eps = run_agent_sessions(sim, agent, user_keys(seed, 0, n, sim.device), "train")
    return eps


@pytest.mark.parametrize("tag", AGENTS)
def test_conformance(tag, sim, tmp_path):
    check_conformance(tag, sim, tmp_path)


def check_conformance(tag, sim, tmp_path):
    """What every agent must do: collect sessions, learn from them (every trainable parameter moves; a ranker
    stays frozen; a target network moves without gradients), round-trip a checkpoint, act deterministically the
    same after loading, with actions in the ranker's box or distinct-item slates."""
    agent = _agent(tag, sim)
    eps = _episodes(sim, agent)
    assert eps["slates"].shape == (6, 101, 10) and eps["actions"].shape == (6, 100, agent.action_dim)
    before = {n: p.detach().clone() for n, p in agent.named_parameters()}
    is_sac = hasattr(agent, "critic_target")
    if is_sac:
        ranker_before = copy.deepcopy(agent.ranker.state_dict())
        target_before = copy.deepcopy(agent.critic_target.state_dict())
    metrics = agent.update(eps)
    assert metrics and all(isinstance(v, float) for v in metrics.values())
    for name, p in agent.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[name]), f"{tag}: parameter {name} did not change"
    if is_sac:
        for k, v in agent.ranker.state_dict().items():
            assert torch.equal(v, ranker_before[k]), f"{tag}: ranker {k} changed"
        assert all(not p.requires_grad for p in agent.critic_target.parameters())
        assert any(not torch.equal(v, target_before[k]) for k, v in agent.critic_target.state_dict().items())
    assert int(agent.updates) == 1
    # save / load round trip, then act on a batch
    path = tmp_path / "a.ckpt"
    save_agent(path, agent, tag, {"env": "focused_topdown"})
    other = _agent(tag, sim, seed=5)
    if is_sac:
        other.ranker.load_state_dict(agent.ranker.state_dict())
    assert load_agent(path, other, tag) == {"env": "focused_topdown"}
    for (n, p), (_, q) in zip(agent.state_dict()["modules"].items(), other.state_dict()["modules"].items(),
                              strict=True):
        assert torch.equal(p, q), n
    for name, opt in agent.optimizers().items():
        assert other.optimizers()[name].state_dict()["state"].keys() == opt.state_dict()["state"].keys()
    s, c = eps["slates"][:, 0], eps["clicks"][:, 0]
    privileged = torch.rand(6, 1000) if agent.privileged else None
    slate_a, action_a, h_a = agent.act(s, c, None, deterministic=True, privileged=privileged)
    slate_b, action_b, h_b = other.act(s, c, None, deterministic=True, privileged=privileged)
    assert torch.equal(slate_a, slate_b) and torch.equal(action_a, action_b) and slate_a.shape == (6, 10)
    if is_sac:
        low, high = agent.ranker.bounds()
        assert ((action_a >= low - 1e-5) & (action_a <= high + 1e-5)).all()
    else:  # slate-level agents store the slate as their action
        assert torch.equal(action_a.long(), slate_a)
        assert all(len(set(row)) == 10 for row in slate_a.tolist())


@pytest.mark.parametrize("tag", ["sac_gems_d8_beta1_lc0.5_scratch_s1", "sac_topk_ideal"])
def test_gradient_isolation(tag, sim):
    agent = _agent(tag, sim)
    eps = _episodes(sim, agent, n=3)
    critic_loss, actor_loss, alpha_loss, _ = agent.losses(eps)
    actor_loss.backward(retain_graph=True)
    assert all(p.grad is None for p in agent.critic.parameters()), "actor loss reached the critic"
    assert all(p.grad is None for p in agent.critic_target.parameters())
    assert all(p.grad is not None for p in agent.actor.parameters())
    agent.zero_grad(set_to_none=True)
    critic_loss.backward()
    assert all(p.grad is None for p in [*agent.actor.parameters(), *agent.actor_belief.parameters()]), \
        "critic loss reached the actor"
    assert all(p.grad is None for p in agent.critic_target.parameters())
    assert all(p.grad is not None for p in agent.critic.q1.parameters())


class _Recorder(Agent):
    """Wraps an agent and records what it sees when it chooses each slate."""

    def __init__(self, agent):
        super().__init__()
        self.agent, self.action_dim, self.seen = agent, agent.action_dim, []

    def act(self, slates, clicks, hidden, deterministic=False, privileged=None):
        self.seen.append((slates.clone(), clicks.clone()))
        return self.agent.act(slates, clicks, hidden, deterministic)


def test_the_state_at_step_t_never_contains_the_slate_of_t(sim):
    agent = _agent("sac_topk_ideal", sim)
    rec = _Recorder(agent)
    _, eps = run_agent_sessions(sim, rec, user_keys(9, 0, 5, sim.device), "eval")
    for t, (slates_seen, clicks_seen) in enumerate(rec.seen):
        # the slate of step t+1 is chosen from observation t only
        assert torch.equal(slates_seen, eps["slates"][:, t]) and torch.equal(clicks_seen, eps["clicks"][:, t])
    # and the belief used for action t does not change when the future (observations > t) changes
    t = 40
    b = agent.critic.belief(eps["slates"], eps["clicks"])
    future = eps["slates"].clone()
    future[:, t + 1 :] = torch.randint(0, 1000, future[:, t + 1 :].shape)
    clicks = eps["clicks"].clone()
    clicks[:, t + 1 :] = ~clicks[:, t + 1 :]
    b2 = agent.critic.belief(future, clicks)
    assert torch.allclose(b[:, : t + 1], b2[:, : t + 1]) and not torch.allclose(b[:, t + 1], b2[:, t + 1])
    # the action stored at t is the one that produced observation t+1
    slate, _, _ = agent.act(eps["slates"][:, 0], eps["clicks"][:, 0], None, deterministic=True)
    assert torch.equal(slate, eps["slates"][:, 1])


def test_unknown_agent_and_mismatched_bounds(sim, tmp_path):
    with pytest.raises(ConfigError, match="unknown agent 'dqn'"):
        parse_agent_tag("dqn")
    agent = _agent("sac_gems_d8_beta1_lc0.5_scratch_s1", sim)
    path = tmp_path / "a.ckpt"
    save_agent(path, agent, "sac_gems_d8_beta1_lc0.5_scratch_s1", {})
    other = _agent("sac_gems_d8_beta1_lc0.5_scratch_s1", sim)
    other.ranker.action_scale.mul_(3)  # a GeMS with other bounds
    with pytest.raises(ArtifactError, match="action_scale"):
        load_agent(path, other, "sac_gems_d8_beta1_lc0.5_scratch_s1")
    with pytest.raises(ArtifactError, match="field 'agent'"):
        load_agent(path, other, "sac_topk_ideal")


def test_replay_buffer_episodes_and_transitions():
    buf = EpisodeBuffer(capacity=3, episode_length=4, slate_size=2, action_dim=1)
    for i in range(5):
        buf.add({"slates": torch.full((1, 5, 2), i), "clicks": torch.zeros(1, 5, 2, dtype=torch.bool),
                 "actions": torch.full((1, 4, 1), float(i)), "rewards": torch.arange(4.0).unsqueeze(0)})
    assert len(buf) == 3 and buf.episodes_added == 5
    assert buf.episodes()["actions"][:, 0, 0].tolist() == [2.0, 3.0, 4.0]  # oldest overwritten
    ep = buf.sample_episodes(8, torch.Generator().manual_seed(0))
    assert ep["slates"].shape == (8, 5, 2) and set(ep["actions"][:, 0, 0].tolist()) <= {2.0, 3.0, 4.0}
    tr = buf.sample_transitions(16, torch.Generator().manual_seed(0))
    assert torch.equal(tr["rewards"], tr["timesteps"].float())
    assert torch.equal(tr["next_slates"], tr["slates"])  # constant per episode here
    fresh = EpisodeBuffer(capacity=3, episode_length=4, slate_size=2, action_dim=1)
    fresh.load_state_dict(buf.state_dict())
    assert all(torch.equal(fresh.data[k], buf.data[k]) for k in buf.data)


def test_online_training_resumes_to_the_same_result(sim, tmp_path, capsys):
    cfg = OnlineConfig(total_steps=4, sessions_per_step=2, updates_per_step=1, batch_size=2, warmup_sessions=2,
                       val_interval=2, val_sessions=4, checkpoint_interval=2)
    saved = []

    def run(total, last):
        agent = _agent("sac_topk_ideal", sim)
        state = train_online(sim, agent, OnlineConfig(**{**cfg.__dict__, "total_steps": total}), seed=4,
                             save_best=lambda a, s: saved.append(s.step), last_path=last, progress=False)
        return agent, state

    straight, s1 = run(4, tmp_path / "a.ckpt")
    assert "online: step 4/4, validation" in capsys.readouterr().out  # progress=False: plain lines for logs
    run(2, tmp_path / "b.ckpt")  # "killed" after step 2
    resumed, s2 = run(4, tmp_path / "b.ckpt")
    assert s1.curve == s2.curve and s1.step == s2.step == 4 and s1.sessions == s2.sessions == 8
    for (n, p), (_, q) in zip(straight.named_parameters(), resumed.named_parameters(), strict=True):
        assert torch.equal(p, q), n


def test_reinforce_log_probability_and_returns():
    from slate_rl.online.reinforce import plackett_luce_log_prob, returns_to_go

    logits = torch.tensor([[0.0, 1.0, 2.0]])
    p = torch.softmax(logits, -1)[0]
    # P(2 then 0) = p2 * p0 / (1 - p2)
    want = torch.log(p[2] * p[0] / (1 - p[2]))
    assert torch.allclose(plackett_luce_log_prob(logits, torch.tensor([[2, 0]])), want.unsqueeze(0))
    g = returns_to_go(torch.tensor([[1.0, 0.0, 2.0]]), 0.5)
    assert torch.allclose(g, torch.tensor([[1.5, 1.0, 2.0]]))


def test_wolpertinger_picks_among_nearest_items_greedily_by_target_q(sim):
    agent = _agent("sac_wknn_corrected", sim)
    eps = _episodes(sim, agent, n=4)
    slate, action, (h_actor, h_target) = agent.act(eps["slates"][:, 0], eps["clicks"][:, 0], None, deterministic=True)
    proto, _ = agent.policy(h_actor, deterministic=True)
    near = agent._nearest(proto.view(4, 10, 20), agent.neighbours)
    assert all(slate[b, j] in near[b, j] for b in range(4) for j in range(10))
    assert torch.equal(action, agent.items[slate].flatten(1))
    # the first slot's choice maximises the target Q among its candidates
    trial = proto.view(4, 1, 10, 20).repeat(1, agent.neighbours, 1, 1)
    trial[:, :, 0] = agent.items[near[:, 0]]
    q1, q2 = agent.critic_target.q(h_target.unsqueeze(1).expand(-1, agent.neighbours, -1), trial.flatten(2))
    assert torch.equal(near[torch.arange(4), 0, torch.minimum(q1, q2).argmax(1)], slate[:, 0])


def test_slateq_ranks_by_relevance_times_item_value_and_uses_true_click_probabilities(sim):
    agent = _agent("slateq_corrected", sim)
    eps = _episodes(sim, agent, n=4)
    assert eps["click_probs"].shape == (4, 100, 10)
    # recorded click probabilities are the simulator's: attractiveness x examination
    assert ((eps["click_probs"] > 0) & (eps["click_probs"] <= 1)).all()
    rel = torch.rand(4, 1000)
    slate, _, belief = agent.act(eps["slates"][:, 0], eps["clicks"][:, 0], None, deterministic=True, privileged=rel)
    want = (rel * agent.q.head(belief)).topk(10, dim=1).indices
    assert torch.equal(slate, want)
    # only clicked items get a target
    eps_no_clicks = {**eps, "clicks": torch.zeros_like(eps["clicks"])}
    loss, metrics = agent.losses(eps_no_clicks)
    assert float(loss.detach()) == 0.0 and float(metrics["clicked_items"]) == 0.0


@pytest.mark.parametrize(("tag", "settings"), [
    ("sac_gems_d8_beta1_lc0.5_scratch_s1", {"config": SACConfig(hidden=24, belief_dim=12)}),
    ("sac_wknn_corrected", {"config": SACConfig(hidden=24, belief_dim=12)}),
    ("reinforce", {"config": ReinforceConfig(hidden=24, belief_dim=12)}),
    ("slateq_corrected", {"config": SlateQConfig(hidden=24, belief_dim=12)}),
])
@pytest.mark.parametrize("belief_table", ["scratch", "ranker"])
def test_a_checkpoint_alone_rebuilds_its_agent(tag, settings, belief_table, sim, tmp_path):
    """Non-default settings are stored in the checkpoint: whoever loads it (collect, train-offline) passes none."""
    gems = GeMSRanker(GeMS(latent_dim=8), torch.zeros(8), torch.ones(8) * 2)
    torch.manual_seed(0)
    agent = build_agent(tag, sim.items, 1000, 10, 100, gems=gems, belief_table=belief_table,
                        click_model=ClickModel.of(sim), **settings)
    agent.update(_episodes(sim, agent))
    save_agent(tmp_path / "a.ckpt", agent, tag, {"step": 1})
    rebuilt, meta = agent_from_checkpoint(tmp_path / "a.ckpt", sim.items, 1000, 10, 100, gems=gems,
                                          click_model=ClickModel.of(sim))
    assert meta == {"step": 1} and type(rebuilt) is type(agent) and rebuilt.build == agent.build
    want, got = nn.Module.state_dict(agent), nn.Module.state_dict(rebuilt)
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


@pytest.mark.usefixtures("single_thread")
def test_build_agent_without_what_it_needs_is_a_clear_error():
    from slate_rl.core.errors import ConfigError
    from slate_rl.online.config import SACConfig, SlateQConfig
    from slate_rl.online.registry import build_agent
    from slate_rl.online.slateq import SlateQ

    table = torch.rand(1000, 20)
    with pytest.raises(ConfigError, match=r"sac_gems_d8_beta1_lc0.5_scratch_s0 needs a GeMS checkpoint \(--gems\)"):
        build_agent("sac_gems_d8_beta1_lc0.5_scratch_s0", table, 1000, 10, 100)
    with pytest.raises(ConfigError, match=r"sac_topk_mf needs MF item embeddings \(--mf\)"):
        build_agent("sac_topk_mf", table, 1000, 10, 100)
    with pytest.raises(ConfigError, match="slateq needs the simulator's click model"):
        build_agent("slateq", table, 1000, 10, 100)
    with pytest.raises(ConfigError, match="agent slateq_corrected takes SlateQConfig settings, not SACConfig"):
        build_agent("slateq_corrected", table, 1000, 10, 100, config=SACConfig())
    corrected = build_agent("slateq_corrected", table, 1000, 10, 100, config=SlateQConfig(hidden=8))
    assert isinstance(corrected, SlateQ) and corrected.variant == "corrected"  # no click model needed


# --------------------------------------------------------------------------- the published defaults


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
