"""The published baselines (naver/gems) and their corrected variants: belief tables from scratch,
each published quirk reproduced on a scripted mini-batch, the corrected variant free of it,
the tag grammar, and the MF validation split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from slate_rl.core.errors import ConfigError
from slate_rl.data.logs import LoggedSessions
from slate_rl.models.gems import GeMS
from slate_rl.models.mf import interactions
from slate_rl.models.rankers import GeMSRanker
from slate_rl.online.base import first_clicks
from slate_rl.online.config import agent_variant, parse_agent_tag, variant_agents, variant_tag
from slate_rl.online.registry import build_agent
from slate_rl.online.reinforce import Reinforce, returns_to_go
from slate_rl.online.rollouts import run_agent_sessions, user_keys
from slate_rl.online.sac import SAC
from slate_rl.online.slateq import ClickModel, SlateQ, SlateQConfig
from slate_rl.online.wolpertinger import Wolpertinger
from slate_rl.pipeline import agent_tags
from slate_rl.report.tables import display_name
from slate_rl.sim.protocol import make_simulator


@pytest.fixture(scope="module")
def sim():
    return make_simulator("focused_topdown")


def _build(tag, sim, belief_table="scratch", seed=0, **kw):
    torch.manual_seed(seed)
    gems = GeMSRanker(GeMS(latent_dim=8), torch.zeros(8), torch.ones(8) * 2)
    return build_agent(tag, sim.items, 1000, 10, 100, gems=gems, mf_items=torch.rand(1000, 20),
                       belief_table=belief_table, click_model=ClickModel.of(sim), **kw)


def _episodes(sim, agent, n=4, seed=3):
    _, eps = run_agent_sessions(sim, agent, user_keys(seed, 0, n, sim.device), "train")
    return eps


# ---------------------------------------------------------------- belief tables

def _tables(agent):
    if isinstance(agent, SAC):
        return [agent.actor_belief.items.weight, agent.critic.belief.items.weight]
    if isinstance(agent, SlateQ):
        return [agent.q.belief.items.weight]
    return [agent.belief.items.weight]


@pytest.mark.parametrize("tag", ["sac_gems_d8_beta1_lc0.5_scratch_s1", "sac_topk_ideal", "sac_topk_mf", "sac_kargmax",
                                 "sac_wknn", "reinforce", "slateq"])
def test_belief_tables_are_fresh_standard_normal_and_independent_of_the_ranker(tag, sim):
    agent = _build(tag, sim)
    tables = [t.detach() for t in _tables(agent)]
    ranker = getattr(agent, "ranker", None)
    ranker_table = ranker.gems.items.weight if isinstance(ranker, GeMSRanker) else getattr(ranker, "items", None)
    for table in tables:
        assert abs(float(table.mean())) < 0.03 and abs(float(table.std()) - 1.0) < 0.03  # N(0, 1): 20,000 draws
        if ranker_table is not None and not isinstance(agent, Wolpertinger):
            assert not torch.allclose(table, ranker_table) and table.data_ptr() != ranker_table.data_ptr()
        assert not torch.allclose(table, sim.items)
    if len(tables) == 2:  # actor and critic: one draw copied into separate storage (the published deepcopy)
        assert torch.equal(tables[0], tables[1]) and tables[0].data_ptr() != tables[1].data_ptr()


def test_wknn_knn_table_is_a_frozen_copy_of_the_critics_scratch_table(sim):
    agent = _build("sac_wknn", sim)
    critic_table = agent.critic.belief.items.weight
    assert torch.equal(agent.items, critic_table) and agent.items.data_ptr() != critic_table.data_ptr()
    before = agent.items.clone()
    agent.update(_episodes(sim, agent))
    assert torch.equal(agent.items, before) and not torch.equal(agent.critic.belief.items.weight, before)


def test_ranker_belief_table_keeps_the_rankers_table(sim):
    agent = _build("sac_topk_ideal", sim, belief_table="ranker")
    assert torch.equal(agent.actor_belief.items.weight, sim.items)
    assert torch.equal(_build("sac_wknn_corrected", sim, belief_table="ranker").items, sim.items)
    with pytest.raises(ConfigError, match="belief_table"):
        _build("sac_topk_ideal", sim, belief_table="mf")


# ---------------------------------------------------------------- SAC+WkNN

def test_wknn_published_critic_learns_on_the_slate_of_observation_t(sim):
    agent = _build("sac_wknn", sim)
    eps = _episodes(sim, agent)
    h = eps["rewards"].shape[1]
    torch.manual_seed(1)
    published = agent.losses(eps)[0]
    # the same SAC loss with the observed slates (t = 0 .. H-1) as actions: slate t-1 for the choice at b_t
    torch.manual_seed(1)
    by_hand = SAC.losses(agent, {**eps, "actions": agent.items[eps["slates"][:, :h]].flatten(-2)})[0]
    assert torch.equal(published, by_hand)
    torch.manual_seed(1)  # the stored actions (the slates chosen from b_t) are ignored
    assert torch.equal(agent.losses({**eps, "actions": torch.zeros_like(eps["actions"])})[0], published)
    corrected = _build("sac_wknn_corrected", sim)
    torch.manual_seed(1)
    base = corrected.losses(eps)[0]
    torch.manual_seed(1)
    assert not torch.equal(corrected.losses({**eps, "actions": torch.zeros_like(eps["actions"])})[0], base)


def test_wknn_published_refinement_quirks(sim):
    agent = _build("sac_wknn", sim)
    eps = _episodes(sim, agent)
    b, k, d, n = 4, 10, 20, agent.neighbours
    slate, action, (h_actor, _) = agent.act(eps["slates"][:, 0], eps["clicks"][:, 0], None, deterministic=True)
    proto, _ = agent.policy(h_actor, deterministic=True)
    near = agent._nearest(proto.view(b, d, k).transpose(1, 2), n)  # slot j's query: every k-th coordinate
    assert all(slate[i, j] in near[i, j] for i in range(b) for j in range(k))
    assert torch.equal(action, agent.items[slate].flatten(1))
    # slot 0: the candidate in every slot, scored by the target's first Q network at the actor's belief
    trial = agent.items[near[:, 0]].unsqueeze(2).expand(b, n, k, d).flatten(2)
    q1 = agent.critic_target.q1(torch.cat([h_actor.unsqueeze(1).expand(-1, n, -1), trial], dim=-1)).squeeze(-1)
    assert torch.equal(near[torch.arange(b), 0, q1.argmax(1)], slate[:, 0])
    warm, _, _ = agent.random_act(eps["slates"][:, 0], eps["clicks"][:, 0], None)
    assert warm.shape == (4, 10) and int(warm.max()) < 1000


# ---------------------------------------------------------------- SlateQ

def _relevance(sim, users):
    c = sim.config
    score = (users.double() @ sim.items.double().T) / sim.max_norm
    return torch.sigmoid(c.slope * (score - c.offset)).float()


def test_slateq_published_target_first_click_off_by_one_and_no_boredom(sim):
    agent = _build("slateq", sim)
    eps = _episodes(sim, agent, n=3)
    h = eps["rewards"].shape[1]
    assert eps["users"].shape == (3, h, 20) and "click_probs" not in eps
    with torch.no_grad():  # a target encoder that differs from the online one: the published target ignores it
        for p in agent.q_target.belief.parameters():
            p.add_(0.1)
    loss, metrics = agent.losses(eps)
    q_all = agent.q.head(agent.q.belief(eps["slates"], eps["clicks"]))
    q_next = agent.q_target.head(agent.q.belief(eps["slates"], eps["clicks"]))  # online belief, target head
    examination = sim.examination
    qs, ys = [], []
    for i in range(3):
        for t in range(h):
            clicked = eps["clicks"][i, t].nonzero().flatten()
            if len(clicked) == 0:
                continue
            item = eps["slates"][i, t, clicked[0]]  # first click of observation t, valued at b_t
            qs.append(q_all[i, t, item])
            if t == h - 1:
                ys.append(torch.tensor(1.0))
                continue
            rel = _relevance(sim, eps["users"][i, t])  # raw preference vector: no boredom, no boost
            nxt = (rel * q_next[i, t + 1]).topk(10).indices
            ys.append(1.0 + 0.8 * (rel[nxt] * examination * q_next[i, t + 1, nxt]).sum())
    want = torch.stack([(q - y) ** 2 for q, y in zip(qs, ys, strict=True)]).mean()
    assert float(metrics["clicked_items"]) == len(qs) > 0
    assert torch.allclose(loss, want, rtol=1e-4, atol=1e-5)
    # first_clicks: the item at the first clicked rank, and which observations have a click
    mask, item = first_clicks(torch.tensor([[5, 6, 7], [1, 2, 3]]), torch.tensor([[False, True, True], [False] * 3]))
    assert mask.tolist() == [True, False] and int(item[0]) == 6


def test_slateq_published_users_are_the_raw_preferences_after_each_step(sim):
    agent = _build("slateq", sim)
    keys = user_keys(5, 0, 2, sim.device)
    _, eps = run_agent_sessions(sim, agent, keys, "random")
    state, _ = sim.reset(keys)
    for t in range(3):
        state, _ = sim.step(state, eps["slates"][:, t + 1])
        assert torch.equal(eps["users"][:, t], state.user)


def test_slateq_divpen_target_penalises_every_row_when_the_batch_reaches_the_threshold():
    sim = make_simulator("focused_divpen")
    model = ClickModel.of(sim)
    rel = torch.full((2, 10), 0.5)
    distinct = torch.stack([(sim.item_topic == t).nonzero()[0] for t in range(10)]).flatten()
    slates = distinct.expand(2, 10)  # every topic once per slate, twice in the batch: below threshold 4
    assert torch.allclose(model.batch_click_probs(rel, slates), 0.5 * sim.examination.expand(2, 10))
    slates4 = torch.cat([slates, slates, slates, slates])  # 4 times across the batch: every row penalised
    probs = model.batch_click_probs(torch.full((4, 10), 0.5), slates4)
    assert torch.allclose(probs, 0.5 / sim.config.diversity_penalty * sim.examination.expand(4, 10))


def test_slateq_published_epsilon_schedule_and_whole_slate_exploration(sim):
    cfg = SlateQConfig()
    assert cfg.schedule(2000) == pytest.approx(0.01 + 0.99 * math.exp(-2), abs=1e-12)
    assert 0.143 < cfg.schedule(2000) < 0.145 and cfg.schedule(100_000) == pytest.approx(0.01, abs=1e-12)
    agent = _build("slateq", sim)
    s, c = torch.zeros(200, 10, dtype=torch.int64), torch.zeros(200, 10, dtype=torch.bool)
    rel = torch.rand(200, 1000)
    greedy, _, _ = agent.act(s, c, None, deterministic=True, privileged=rel)
    agent.random_act(s[:1].expand(2000, -1), c[:1].expand(2000, -1), None)  # 2,000 warm-up user-steps
    assert agent.epsilon() == pytest.approx(cfg.schedule(20))
    agent.user_steps.fill_(0)  # epsilon 1: every slate uniformly random, duplicates allowed
    explored, _, _ = agent.act(s, c, None, privileged=rel)
    assert (explored != greedy).any(dim=1).all()
    assert int(agent.user_steps) == 200
    agent.user_steps.fill_(10**9)  # epsilon 0.01: whole slates, greedy or random
    slates, _, _ = agent.act(s, c, None, privileged=rel)
    same = (slates == greedy).all(dim=1)
    assert same.float().mean() > 0.95 and ((slates == greedy).sum(1)[~same] < 5).all()
    corrected = _build("slateq_corrected", sim, config=SlateQConfig(epsilon=0.5))
    g2, _, _ = corrected.act(s, c, None, deterministic=True, privileged=rel)
    mixed, _, _ = corrected.act(s, c, None, privileged=rel)
    assert ((mixed == g2).sum(1) > 0).float().mean() > 0.9  # per-slot exploration keeps part of the slate


# ---------------------------------------------------------------- REINFORCE

def test_reinforce_published_samples_with_replacement_and_its_surrogate(sim):
    agent = _build("reinforce", sim)
    with torch.no_grad():
        agent.policy_net[-1].bias.zero_()
        agent.policy_net[-1].bias[:3] = 30.0  # nearly all the mass on 3 items
    s, c = torch.zeros(8, 10, dtype=torch.int64), torch.zeros(8, 10, dtype=torch.bool)
    slates, _, _ = agent.act(s, c, None)
    assert all(len(set(row)) <= 3 for row in slates.tolist())  # 10 draws with replacement
    corrected = _build("reinforce_corrected", sim)
    corrected.policy_net.load_state_dict(agent.policy_net.state_dict())
    assert all(len(set(row)) == 10 for row in corrected.act(s, c, None)[0].tolist())

    agent = _build("reinforce", sim, seed=4)
    eps = _episodes(sim, agent, n=2)
    h = eps["rewards"].shape[1]
    loss, _ = agent.losses(eps)
    probs = torch.softmax(agent.policy_net(agent.belief(eps["slates"], eps["clicks"])), -1)
    g = returns_to_go(eps["rewards"], 0.8)
    total = []
    for i in range(2):
        terms = []
        for t in range(h):
            clicked = eps["clicks"][i, t].nonzero().flatten()
            if len(clicked):
                pi = probs[i, t, eps["slates"][i, t, clicked[0]]]
                terms.append(g[i, t] * torch.log(1 - (1 - pi) ** 10 + 1e-6))
        total.append(-torch.stack(terms).sum())
    assert torch.allclose(loss, torch.stack(total).mean(), rtol=1e-5)
    assert not torch.allclose(_build("reinforce_corrected", sim, seed=4).losses(eps)[0], loss)


def test_reinforce_and_slateq_default_to_the_published_variant(sim):
    assert _build("reinforce", sim).variant == "published" and _build("slateq", sim).variant == "published"
    assert isinstance(_build("reinforce_corrected", sim), Reinforce)
    with pytest.raises(ConfigError, match="click model"):
        SlateQ(1000, variant="published")


# ---------------------------------------------------------------- MF

def _logs(n=20, h=6, k=3):
    rng = np.random.default_rng(0)
    slates = rng.integers(0, 1000, size=(n, h, k)).astype(np.int16)
    clicks = rng.random((n, h, k)) < 0.4
    return LoggedSessions(slates, clicks, slates[:, 0], clicks[:, 0], clicks.sum((1, 2)).astype(np.float32),
                          {"env_config": {"num_items": 1000}})


def test_mf_published_validation_reuses_the_training_users():
    logs = _logs()
    train, val = interactions(logs, 0.1, seed=0, variant="published")
    sess, step, rank = np.nonzero(logs.clicks)
    held = sess < 2
    assert sorted(val["pos"].tolist()) == sorted(logs.slates[sess, step, rank][held].astype(int).tolist())
    assert set(val["users"].tolist()) <= set(train["users"].tolist())  # training users' vectors score them
    assert sorted(set(train["users"].tolist())) == list(range(18))  # the other sessions, renumbered from 0
    train_c, val_c = interactions(logs, 0.1, seed=0, variant="corrected")
    assert set(val_c["users"].tolist()) <= {0, 1}  # held-out sessions, their own user vectors
    assert len(train_c["pos"]) + len(val_c["pos"]) == int(logs.clicks.sum())


# ---------------------------------------------------------------- tags and labels

@given(st.sampled_from(variant_agents()), st.sampled_from(["published", "corrected"]))
def test_variant_tags_round_trip(base, variant):
    tag = variant_tag(base, variant)
    assert parse_agent_tag(tag) == (base, None) and agent_variant(tag) == variant


def test_variant_tags_in_the_pipeline_and_the_report():
    with pytest.raises(ConfigError, match="no corrected variant"):
        variant_tag("sac_kargmax", "corrected")
    with pytest.raises(ConfigError, match="unknown agent"):
        parse_agent_tag("sac_kargmax_corrected")
    assert agent_variant("sac_topk_ideal") == "published"
    config = {"agents": {"names": ["sac_kargmax", "sac_wknn", "reinforce", "slateq"],
                         "variants": {"slateq": "corrected", "sac_wknn": "published"}}}
    assert agent_tags(config) == ["sac_kargmax", "sac_wknn", "reinforce", "slateq_corrected"]
    assert display_name("online", "slateq_corrected") == "SlateQ (corrected)"
    assert display_name("online", "slateq") == "SlateQ"
