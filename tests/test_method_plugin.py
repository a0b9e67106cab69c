"""An offline method from a plugin (``tests/plugins/toy_method.py``, one file, no edit of the package): its
registration gives it a config section and schema, ``train-offline`` options, a display name, a scheduling
priority and the conformance tests, and the tiny pipeline trains and evaluates it."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import test_offline_algos as conformance
from test_workflow import _config, tiny_with_plugins

from slate_rl.core.errors import ConfigError
from slate_rl.offline.config import ALGO_CONFIGS, display_names, offline_algos
from slate_rl.offline.registry import make_algo
from slate_rl.pipeline import load_plugins, load_schema, method_priority, section_args, validate_config
from slate_rl.stages.train_offline import add_arguments


@pytest.fixture
def toy_method(plugin) -> type:
    plugin("toy_method")
    return ALGO_CONFIGS["toylin"]


def test_the_registration_is_all_the_pipeline_needs(toy_method):
    assert offline_algos()[-1] == "toylin" and display_names()["toylin"] == "Linear BC"
    assert method_priority("toylin") == 1
    schema = load_schema()
    assert "toylin" in schema["properties"]["offline"]["properties"]["algos"]["items"]["enum"]
    assert schema["properties"]["toylin"]["properties"] == {"total_steps": {"type": ["integer", "null"]},
                                                          "lr": {"type": "number"}}
    cfg = _config()
    cfg["plugins"], cfg["offline"]["algos"], cfg["toylin"] = ["toy_method"], ["toylin", "bc"], {"lr": 0.01}
    checked = validate_config(cfg)
    assert section_args(checked, "toylin", prefix="toylin_") == "--toylin-lr=0.01"
    cfg["toylin"] = {"lr": "fast"}
    with pytest.raises(ConfigError, match="toylin.lr"):
        validate_config(cfg)
    algo = make_algo("toylin", 4, *conformance._box(), 0.9, 10)
    assert type(algo).__name__ == "ToyLinear"
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = {o: a for a in parser._actions for o in a.option_strings}
    assert "toylin" in options["--algo"].choices and "--toylin-lr" in options


@pytest.mark.parametrize("check", ["test_every_trainable_parameter_changes",
                                   "test_each_loss_moves_only_its_own_optimiser", "test_save_load_round_trip",
                                   "test_act_stays_in_the_box", "test_metrics_are_finite_scalars_on_the_device"])
def test_the_conformance_tests_take_the_plugins_small_version(toy_method, monkeypatch, check):
    monkeypatch.setitem(conformance.CASES, "toylin", ("toylin", toy_method(**toy_method.METHOD.small)))
    getattr(conformance, check)("toylin")


def test_bad_plugins_get_one_clear_error(monkeypatch, tmp_path):
    before = dict(ALGO_CONFIGS)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "no_methods.py").write_text("X = 1\n")
    (tmp_path / "clash.py").write_text(
        "from dataclasses import dataclass\nfrom typing import ClassVar\n"
        "from slate_rl.offline.config import Method\n\n\n@dataclass(frozen=True)\nclass BC:\n"
        "    SECTION: ClassVar[str] = 'bc'\n    METHOD: ClassVar[Method] = Method('B', 'clash:X', 'td')\n\n\n"
        "OFFLINE_METHODS = (BC,)\n")
    (tmp_path / "not_config.py").write_text("OFFLINE_METHODS = (int,)\n")
    for module, message in [("no_such_plugin", "plugins: cannot import module 'no_such_plugin'"),
                            ("no_methods", "defines no OFFLINE_METHODS"),
                            ("clash", "method name 'bc' is taken by slate_rl.offline.config.BCConfig"),
                            ("not_config", "is not an offline method's config")]:
        with pytest.raises(ConfigError, match=message):
            load_plugins([module])
    cfg = _config()
    cfg["plugins"] = "toy_method"
    with pytest.raises(ConfigError, match="'plugins' must be a list of module names"):
        validate_config(cfg)
    assert before == ALGO_CONFIGS


@pytest.mark.e2e
def test_the_tiny_pipeline_trains_and_reports_the_plugins_method(tmp_path):
    res = tiny_with_plugins(tmp_path, "results/diffuse_mix/toylin.json",
                            {"plugins": ["toy_method"], "offline": {"algos": ["toylin", "bc"]}})
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((tmp_path / "results/diffuse_mix/toylin.json").read_text())
    assert result["algo"] == "toylin" and np.isfinite(result["return_mean"])
    assert (tmp_path / "data/policies/diffuse_mix/expert/toylin/seed0.pt").is_file()
