"""An online agent from a plugin (``tests/plugins/toy_agent.py``): its one file and config.yaml's ``plugins`` are all
the pipeline needs to validate its settings, give train-agent its options, plan and run its jobs, test it like the
built-in agents and name it in the report."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest
import test_agents
from test_workflow import _config, tiny_with_plugins

from slate_rl.core.errors import ConfigError
from slate_rl.online.config import (
    AGENT_KINDS,
    AgentKind,
    SACConfig,
    agent_names,
    agent_section,
    agent_tag_wildcard,
    parse_agent_tag,
    register_agent,
    variant_tag,
)
from slate_rl.pipeline import agent_section_args, agent_tags, load_schema, validate_config
from slate_rl.report.tables import display_name, method_rank
from slate_rl.stages.train_agent import add_arguments


@pytest.fixture
def toy_agent(plugin) -> AgentKind:
    plugin("toy_agent")
    return AGENT_KINDS["toypop"]


def test_the_registration_is_all_the_pipeline_needs(toy_agent):
    assert agent_names()[-1] == "toypop" and parse_agent_tag("toypop") == ("toypop", None)
    assert re.fullmatch(agent_tag_wildcard(), "toypop") and not re.fullmatch(agent_tag_wildcard(), "toypop_corrected")
    assert agent_section("toypop") == "toypop" and display_name("online", "toypop") == "Popularity"
    assert method_rank("online", "toypop") == len(agent_names()) - 1
    with pytest.raises(ConfigError, match="agent toypop has no corrected variant"):
        variant_tag("toypop", "corrected")
    schema = load_schema()
    assert "toypop" in schema["properties"]["agents"]["properties"]["names"]["items"]["enum"]
    assert schema["properties"]["toypop"]["properties"] == {"lr": {"type": "number"}}
    cfg = _config()
    cfg["plugins"], cfg["agents"]["names"], cfg["toypop"] = ["toy_agent"], ["sac_gems", "toypop"], {"lr": 0.2}
    checked = validate_config(cfg)
    assert agent_tags(checked)[1] == "toypop"
    assert agent_section_args(checked, "toypop") == "--toypop-lr=0.2"
    cfg["toypop"] = {"lr": -1.0}
    with pytest.raises(ConfigError, match="toypop.lr must be > 0"):
        validate_config(cfg)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert "--toypop-lr" in {o for a in parser._actions for o in a.option_strings}


def test_the_conformance_checks_take_the_plugins_small_version(toy_agent, tmp_path):
    sim = test_agents.make_simulator("focused_topdown")
    test_agents.check_conformance("toypop", sim, tmp_path)
    agent = test_agents._agent("toypop", sim)
    assert type(agent).__name__ == "ToyPopularity" and agent.cfg.lr == toy_agent.small["lr"]
    assert agent.build == {"agent": "toypop", "belief_table": "ranker", "toypop": {"lr": 0.1}}


def test_bad_registrations_get_one_clear_error(toy_agent):
    before = dict(AGENT_KINDS)
    cases = [(object(), "is not an online agent's registration"),
             (AgentKind("slateq", "Q", "x:y", SACConfig), "agent name 'slateq' is taken"),
             (AgentKind("Bad-Name", "B", "x:y", SACConfig), "must be lower-case letters"),
             (AgentKind("mine_corrected", "B", "x:y", SACConfig), "not ending in '_corrected'"),
             (AgentKind("mine", "M", "x:y", dict), "config must be a dataclass with SECTION"),
             (AgentKind("mine", "M", "x:y", SACConfig, ("gpu",)), "unknown need 'gpu'")]  # type: ignore[arg-type]
    for kind, message in cases:
        with pytest.raises(ConfigError, match=message):
            register_agent(kind, "plugin test")
    register_agent(toy_agent, "plugin test")  # the same registration again: nothing changes
    assert before == AGENT_KINDS


@pytest.mark.e2e
def test_the_tiny_pipeline_trains_and_tests_the_plugins_agent(tmp_path):
    target = "results/diffuse_mix/online/toypop/seed0.json"
    res = tiny_with_plugins(tmp_path, target, {"plugins": ["toy_agent"], "agents": {"names": ["sac_gems", "toypop"]},
                                               "toypop": {"lr": 0.1}})
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / target).read_text())
    assert result["agent"] == "toypop" and result["toypop"] == {"lr": 0.1} and np.isfinite(result["return_mean"])
    for which in ("best", "medium", "last"):
        assert (tmp_path / f"data/agents/diffuse_mix/toypop/seed0/{which}.ckpt").is_file()
