"""Online agents: one conformance test for all, no off-by-one leakage, checkpoints, resume."""

from __future__ import annotations

import copy

import pytest
import torch
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
from slate_rl.online.slateq import ClickModel
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
