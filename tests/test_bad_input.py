"""Bad input gets one clear error naming the problem (SlateRLError and subclasses, or an
argparse usage error), and the evaluate-policy stage works end to end."""

from __future__ import annotations

import dataclasses
import json
import typing

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_helpers import keys
from test_resume import _pretrain_gems, _train_mf

from slate_rl.cli import main
from slate_rl.core.config import from_dict
from slate_rl.core.errors import ArtifactError, ConfigError, SlateRLError
from slate_rl.data.logs import save_logs
from slate_rl.sim.config import PRESETS, TopicRecConfig, make_env_config
from slate_rl.sim.core import TopicRec
from slate_rl.sim.embeddings import load_item_embeddings
from slate_rl.sim.gym_env import TopicRecEnv
from slate_rl.sim.protocol import make_simulator

pytestmark = pytest.mark.usefixtures("single_thread")

EVAL = ["evaluate-policy", "--policy", "random", "--device", "cpu"]


# --------------------------------------------------------------------------- environments


def test_unknown_environment_names_it_and_lists_presets() -> None:
    with pytest.raises(SlateRLError) as exc:
        make_env_config("focussed_topdown")
    msg = str(exc.value)
    assert "focussed_topdown" in msg
    assert all(name in msg for name in PRESETS)
    with pytest.raises(ConfigError, match="focussed_topdown"):
        make_simulator("focussed_topdown")


def test_unknown_environment_via_cli(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main([*EVAL, "--env", "no_such_env", "--sessions", "5"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and "no_such_env" in err and "focused_topdown" in err
    assert "Traceback" not in err


def test_user_defined_environment_with_bad_base_or_key() -> None:
    with pytest.raises(ConfigError, match="not a preset"):
        make_env_config("mine", {"mine": {"base": "nope"}})
    with pytest.raises(ConfigError, match="diversity_penalti"):
        make_env_config("mine", {"mine": {"base": "focused_mix", "diversity_penalti": 2.0}})
    cfg = make_env_config("mine", {"mine": {"base": "focused_mix", "diversity_penalty": 2.0}})
    assert cfg.diversity_penalty == 2.0 and cfg.click_model == "mix"


# --------------------------------------------------------------------------- embeddings files


def test_wrong_embeddings_shape(tmp_path) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, np.abs(np.random.default_rng(0).normal(size=(999, 20))).astype(np.float32))
    with pytest.raises(ArtifactError) as exc:
        load_item_embeddings(path)
    msg = str(exc.value)
    assert "(999, 20)" in msg and "(1000, 20)" in msg and str(path) in msg
    with pytest.raises(ArtifactError, match=r"\(999, 20\)"):
        TopicRec(make_env_config("focused_topdown"), np.load(path))


def test_wrong_embeddings_shape_via_cli(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.npy"
    np.save(path, np.ones((999, 20), dtype=np.float32))
    rc = main([*EVAL, "--env", "focused_topdown", "--sessions", "5", "--embeddings-file", str(path)])
    err = capsys.readouterr().err
    assert rc == 2 and "(999, 20)" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        (-np.ones((1000, 20), np.float32), "negative"),
        (np.full((1000, 20), np.nan, np.float32), "NaN"),
        (np.zeros((1000, 20), np.float32), "zeros"),
        (np.ones((1000, 20), np.int64), "dtype"),
        (np.ones((1000, 20, 1), np.float32), "shape"),
    ],
)
def test_invalid_embeddings_values(tmp_path, table: np.ndarray, fragment: str) -> None:
    path = tmp_path / "t.npy"
    np.save(path, table)
    with pytest.raises(ArtifactError, match=fragment):
        load_item_embeddings(path)


def test_embeddings_file_missing_or_unreadable(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        load_item_embeddings(tmp_path / "missing.npy")
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ArtifactError, match="cannot read"):
        load_item_embeddings(pickled)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a tensor")
    with pytest.raises(ArtifactError, match="garbage.pt: unreadable item-embedding table"):
        load_item_embeddings(garbage)


def test_pt_tensor_table_loads(tmp_path, focused_table: np.ndarray) -> None:
    path = tmp_path / "t.pt"
    torch.save(torch.from_numpy(focused_table), path)
    np.testing.assert_array_equal(load_item_embeddings(path), focused_table)


# --------------------------------------------------------------------------- CLI arguments


@pytest.mark.parametrize("value", ["-5", "0", "ten"])
def test_bad_session_count_via_cli(capsys: pytest.CaptureFixture[str], value: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*EVAL, "--env", "focused_topdown", "--sessions", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--sessions" in err
    assert ("must be >= 1" in err) if value != "ten" else ("expected an integer" in err)


def test_bad_epsilon_via_cli(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["evaluate-policy", "--policy", "eps-greedy", "--epsilon", "1.5", "--env", "focused_topdown",
               "--sessions", "5", "--device", "cpu"])
    assert rc == 2 and "epsilon" in capsys.readouterr().err


def test_unknown_policy_via_cli(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate-policy", "--policy", "greedy", "--env", "focused_topdown"])
    assert exc.value.code == 2 and "greedy" in capsys.readouterr().err


# --------------------------------------------------------------------------- slates


@pytest.mark.parametrize("bad_id", [1000, -2, 5000, -100])
def test_slate_id_out_of_range(sim: TopicRec, bad_id: int) -> None:
    state, _ = sim.reset(keys(3))
    slate = torch.arange(30).reshape(3, 10)
    slate[1, 4] = bad_id
    with pytest.raises(SlateRLError) as exc:
        sim.step(state, slate)
    assert str(bad_id) in str(exc.value) and "0..999" in str(exc.value)


@pytest.mark.parametrize(
    ("slate", "fragment"),
    [
        (torch.zeros(3, 9, dtype=torch.int64), "shape"),
        (torch.zeros(3, 11, dtype=torch.int64), "shape"),
        (torch.zeros(10, dtype=torch.int64), "shape"),
        (torch.zeros(3, 10, 1, dtype=torch.int64), "shape"),
        (torch.zeros(3, 10, dtype=torch.float32), "integers"),
        (torch.zeros(3, 10, dtype=torch.bool), "integers"),
        (torch.zeros(2, 10, dtype=torch.int64), "3 users"),
        (torch.zeros(4, 10, dtype=torch.int64), "3 users"),
    ],
)
def test_wrong_slate_shape_or_dtype(sim: TopicRec, slate: torch.Tensor, fragment: str) -> None:
    state, _ = sim.reset(keys(3))
    with pytest.raises(SlateRLError, match=fragment):
        sim.step(state, slate)


def test_gym_env_rejects_bad_actions(focused_table: np.ndarray) -> None:
    env = TopicRecEnv(item_embeddings=focused_table)
    env.reset(seed=0)
    with pytest.raises(SlateRLError, match="1000"):
        env.step(np.full(10, 1000))
    with pytest.raises(SlateRLError, match="shape"):
        env.step(np.zeros(9, dtype=np.int64))


# --------------------------------------------------------------------------- evaluate-policy end to end


@pytest.mark.parametrize("policy", ["random", "oracle", "eps-greedy"])
def test_evaluate_policy_end_to_end(tmp_path, capsys: pytest.CaptureFixture[str], policy: str) -> None:
    out = tmp_path / "res.json"
    rc = main(["evaluate-policy", "--env", "focused_topdown", "--policy", policy, "--sessions", "50",
               "--seed", "3", "--device", "cpu", "--output", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out.strip().splitlines()
    result = json.loads(printed[-1])
    assert isinstance(result, dict)
    for key in ("return_mean", "return_std", "return_ci95", "n_sessions", "steps_per_second"):
        assert key in result
    assert result["n_sessions"] == 50
    assert 0 < result["return_mean"] <= 1000 and result["return_std"] > 0
    # 95% CI half-width = t(0.975, 49) * std / sqrt(50).
    assert result["return_ci95"] == pytest.approx(2.009575 * result["return_std"] / 50**0.5, rel=1e-4)
    assert result["steps_per_second"] > 0
    assert result["policy"] == policy and result["env"] == "focused_topdown"
    timing = result.pop("steps_per_second")  # printed, but written apart from the result
    assert json.loads(out.read_text()) == result
    assert json.loads(out.with_name("res.timings.json").read_text())["steps_per_second"] == timing
    if policy == "random":
        assert 20 < result["return_mean"] < 50
    elif policy == "oracle":
        assert result["return_mean"] > 60


# --------------------------------------------------------------------------- config parsing (property-based)

_FIELDS = {f.name for f in dataclasses.fields(TopicRecConfig)}
_HINTS = typing.get_type_hints(TopicRecConfig)
_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=5))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    unknown=st.text(min_size=1, max_size=20).filter(lambda k: k not in _FIELDS),
    valid=st.dictionaries(st.sampled_from(sorted(_FIELDS)), st.just(None), max_size=3),
    value=_scalars,
)
def test_from_dict_unknown_key_raises_naming_it(unknown: str, valid: dict, value) -> None:
    defaults = TopicRecConfig()
    data = {name: getattr(defaults, name) for name in valid}
    data[unknown] = value
    with pytest.raises(ConfigError) as exc:
        from_dict(TopicRecConfig, data)
    assert repr(unknown) in str(exc.value)
    assert "valid keys" in str(exc.value)


def _wrong_value(name: str) -> st.SearchStrategy:
    tp = _HINTS[name]
    junk = st.one_of(st.none(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
                     st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))
    if tp is int:
        return st.one_of(junk, st.booleans(), st.floats(allow_nan=False))
    if tp is float:
        return st.one_of(junk, st.booleans())
    choices = typing.get_args(tp)  # Literal
    return st.one_of(st.none(), st.integers(), st.text(max_size=8).filter(lambda s: s not in choices))


@st.composite
def _field_and_wrong_value(draw):
    name = draw(st.sampled_from(sorted(_FIELDS)))
    return name, draw(_wrong_value(name))


@settings(max_examples=200, deadline=None)
@given(_field_and_wrong_value())
def test_from_dict_wrong_type_raises_naming_the_key(case) -> None:
    name, value = case
    with pytest.raises(ConfigError) as exc:
        from_dict(TopicRecConfig, {name: value})
    assert repr(name) in str(exc.value)


def test_from_dict_accepts_valid_values_and_range_errors_name_the_field() -> None:
    cfg = from_dict(TopicRecConfig, {"diversity_penalty": 3, "click_model": "mix", "num_items": 500})
    assert cfg.diversity_penalty == 3.0 and isinstance(cfg.diversity_penalty, float)
    for name, bad in (("num_items", 0), ("omega", 1.5), ("diversity_penalty", 0.0), ("position_decay", 0.0)):
        with pytest.raises(ConfigError, match=name):
            from_dict(TopicRecConfig, {name: bad})


# --------------------------------------------------------------------------- non-finite and oversized settings


@settings(max_examples=100, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_finite_float_accepts_exactly_the_finite_numbers(value: float) -> None:
    import argparse
    import math

    from slate_rl.core.config import finite_float

    if math.isfinite(value):
        assert finite_float(repr(value)) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError, match="finite"):
            finite_float(repr(value))


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=-10**12, max_value=10**12), st.integers(min_value=1, max_value=10**9))
def test_bounded_int_applies_both_bounds(value: int, limit: int) -> None:
    import argparse

    from slate_rl.core.config import bounded_int

    if 1 <= value <= limit:
        assert bounded_int(limit, minimum=1)(str(value)) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            bounded_int(limit, minimum=1)(str(value))


@pytest.mark.parametrize("argv, option", [
    (["train-mf", "--logs", "x.npz", "--output", "o.npy", "--metrics", "m.json", "--lr", "inf"], "--lr"),
    (["pretrain-gems", "--logs", "x.npz", "--output", "o.ckpt", "--metrics", "m.json", "--beta", "nan"], "--beta"),
    (["train-agent", "--env", "focused_mix", "--embeddings-file", "e.npy", "--agent", "sac_topk_ideal",
      "--seed", "0", "--output-dir", "d", "--results", "r.json", "--policy-lr", "inf"], "--policy-lr"),
    (["train-agent", "--env", "focused_mix", "--embeddings-file", "e.npy", "--agent", "sac_topk_ideal",
      "--seed", "0", "--output-dir", "d", "--results", "r.json", "--hidden", "100000000"], "--hidden"),
    (["train-agent", "--env", "focused_mix", "--embeddings-file", "e.npy", "--agent", "sac_topk_ideal",
      "--seed", "0", "--output-dir", "d", "--results", "r.json", "--test-sessions", "0"], "--test-sessions"),
    (["train-offline", "--algo", "td3bc", "--expert-noise", "nan"], "--expert-noise"),
    (["collect", "--env", "focused_mix", "--embeddings-file", "e.npy", "--quality", "expert", "--gems", "g",
      "--expert", "b", "--output", "o.npz", "--noise", "nan"], "--noise"),
    (["make-embeddings", "--kind", "focused", "--output", "o.npy", "--num-items", "-5"], "--num-items"),
    (["make-embeddings", "--kind", "focused", "--output", "o.npy", "--num-items", "0"], "--num-items"),
])
def test_bad_numbers_on_the_command_line_are_one_usage_error_naming_the_option(
        capsys: pytest.CaptureFixture[str], argv: list[str], option: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"argument {option}" in err and "Traceback" not in err


def test_non_finite_config_values_are_refused_naming_the_key() -> None:
    from slate_rl.models.config import GeMSConfig, MFConfig
    from slate_rl.offline.config import CQLConfig, OfflineConfig, OfflineDataConfig, TD3BCConfig
    from slate_rl.online.config import SACConfig

    for cls, key in ((MFConfig, "lr"), (GeMSConfig, "beta"), (SACConfig, "policy_lr"), (TD3BCConfig, "actor_lr"),
                     (OfflineDataConfig, "noise"), (OfflineConfig, "q_limit")):
        for value in (float("nan"), float("inf")):
            with pytest.raises(ConfigError, match=rf"{cls.SECTION}\.{key} must be a finite number"):
                from_dict(cls, {key: value})
    with pytest.raises(ConfigError, match="diversity_penalty must be a finite number"):
        make_env_config("mine", {"mine": {"base": "focused_mix", "diversity_penalty": float("nan")}})
    assert from_dict(CQLConfig, {"clip_diff_min": -float("inf")}).clip_diff_min == -float("inf")  # no bound
    with pytest.raises(ConfigError, match="clip_diff_min"):
        from_dict(CQLConfig, {"clip_diff_min": float("nan")})


def test_config_yaml_refuses_non_finite_values_and_reserved_environment_names() -> None:
    import yaml
    from conftest import REPO

    from slate_rl.pipeline import validate_config

    def config() -> dict:
        return yaml.safe_load((REPO / "config.yaml").read_text())

    for section, key in (("mf", "lr"), ("sac", "policy_lr"), ("td3bc", "actor_lr"), ("offline_data", "noise"),
                         ("offline", "q_limit"), ("gems", "beta")):
        for text in (".nan", ".inf"):
            cfg = config()
            cfg[section][key] = yaml.safe_load(text)
            with pytest.raises(ConfigError, match=rf"{section}\.{key}"):
                validate_config(cfg)
    cfg = config()
    cfg["environments"] = {"mine": {"base": "focused_mix", "diversity_penalty": float("nan")}}
    with pytest.raises(ConfigError, match="diversity_penalty"):
        validate_config(cfg)
    cfg["environments"] = {"report": {"base": "focused_mix"}}
    with pytest.raises(ConfigError, match="environments.report.*taken"):
        validate_config(cfg)


def test_sizes_have_upper_bounds_equal_to_the_schema_maxima() -> None:
    from slate_rl.core.config import SIZE_MAXIMA
    from slate_rl.offline.config import OfflineDataConfig
    from slate_rl.pipeline import SECTIONS, load_schema

    with pytest.raises(ConfigError, match=r"offline_data\.episodes must be <= 1000000"):
        OfflineDataConfig(episodes=100_000_000_000)
    schema = load_schema()
    checked = 0
    for section in SECTIONS:
        for key, prop in schema["properties"][section].get("properties", {}).items():
            if "$ref" in prop:
                prop = schema["$defs"][prop["$ref"].rsplit("/", 1)[-1]]
            if prop.get("type") == "integer" and "maximum" in prop:
                assert SIZE_MAXIMA[key] == prop["maximum"], (section, key)
                checked += 1
    assert checked >= 5


def test_mixture_weights_must_be_finite() -> None:
    from slate_rl.offline.datasets import mixture_counts, parse_mixture

    for weight in ("nan", "inf", "-1"):
        with pytest.raises(ConfigError, match="finite numbers > 0"):
            parse_mixture([f"p.npz={weight}"])
    with pytest.raises(ConfigError, match="finite numbers > 0"):
        mixture_counts({"a": float("nan")}, 10)


def _config() -> dict:
    import yaml
    from test_workflow import REPO

    from slate_rl.pipeline import validate_config

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate_config(config)  # the defaults pass
    return config


@pytest.mark.parametrize("name", ["online", "reference"])
def test_a_mixture_cannot_take_a_results_folder_name(name):
    from slate_rl.core.errors import ConfigError
    from slate_rl.pipeline import validate_config

    config = _config()
    config["offline_data"]["mixtures"] = {name: {"expert": 1, "random": 1}}
    with pytest.raises(ConfigError, match=f"offline_data.mixtures.{name}.*taken"):
        validate_config(config)


@pytest.mark.parametrize(("section", "key"), [("logs", "sessions"), ("offline_data", "episodes"),
                                              ("evaluation", "test_sessions"), ("online", "buffer_capacity")])
def test_sizes_have_upper_bounds(section, key):
    from slate_rl.core.errors import ConfigError
    from slate_rl.pipeline import validate_config

    config = _config()
    config[section][key] = 100_000_000_000
    with pytest.raises(ConfigError, match=f"{section}.{key}.*maximum"):
        validate_config(config)


def test_a_size_beyond_memory_on_the_command_line_is_one_line(capsys):
    # refused by the option's upper bound before any work (an allocation that still fails: test_bad_input.py)
    with pytest.raises(SystemExit) as exc:
        main(["evaluate-policy", "--policy", "random", "--device", "cpu", "--env", "focused_topdown",
              "--sessions", "100000000000"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err
    assert [line for line in err.splitlines() if "error:" in line] == [
        "slate-rl evaluate-policy: error: argument --sessions: must be <= 10000000, got 100000000000"]


def test_a_yaml_syntax_error_names_file_and_line(tmp_path):
    from slate_rl.core.config import load_yaml
    from slate_rl.core.errors import ConfigError

    path = tmp_path / "config.yaml"
    path.write_text("logs:\n  sessions: 10\n  epsilon: [0.5\nmf:\n  dim: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_yaml(path)
    assert str(path) in str(exc.value) and "line 4" in str(exc.value)


# --------------------------------------------------------------------------- trained artifacts, mismatched inputs


def _tiny_gems(latent: int = 4, meta: dict | None = None):
    from slate_rl.models.gems import GeMS
    from slate_rl.models.rankers import GeMSRanker

    torch.manual_seed(0)
    model = GeMS(num_items=1000, latent_dim=latent, encoder_hidden=(8,), decoder_hidden=(8,))
    return GeMSRanker(model, torch.zeros(latent), torch.ones(latent), meta or {})


def test_non_finite_trained_weights_stop_the_write(tmp_path) -> None:
    from slate_rl.core.checks import require_finite
    from slate_rl.models.rankers import save_gems_ranker

    gems = _tiny_gems()
    with torch.no_grad():
        next(gems.gems.parameters()).fill_(float("nan"))
    path = tmp_path / "gems.ckpt"
    with pytest.raises(ArtifactError, match="NaN or infinite values in 'state_dict"):
        save_gems_ranker(path, gems)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ArtifactError, match="MF item table"):
        require_finite(tmp_path / "mf.npy", "MF item table", np.array([[1.0, np.inf]], dtype=np.float32))
    require_finite(tmp_path / "ok.npy", "table", {"a": np.ones(3), "b": torch.arange(3)})


def test_inputs_of_another_environment_or_gems_are_refused_naming_both(tmp_path, sim: TopicRec) -> None:
    import argparse

    from slate_rl.core.artifacts import check_environment
    from slate_rl.models.rankers import save_gems_ranker
    from slate_rl.stages.common import agent_gems

    with pytest.raises(ArtifactError, match="'diffuse_mix'.*'focused_mix'"):
        check_environment("best.ckpt", {"env": "diffuse_mix"}, "focused_mix")
    with pytest.raises(ArtifactError, match="env_config.num_items"):
        check_environment("g.ckpt", {"env": "x", "env_config": {"num_items": 5}}, "x", {"num_items": 6})
    check_environment("old.ckpt", {}, "focused_mix")  # records nothing: nothing to compare
    path = tmp_path / "gems.ckpt"
    save_gems_ranker(path, _tiny_gems(4, {"env": "focused_topdown", "tag": "d4_beta1_lc0.5_scratch_s1"}))
    args = argparse.Namespace(agent="sac_gems_d8_beta1_lc0.5_scratch_s1", gems=str(path), env="focused_topdown")
    with pytest.raises(ArtifactError, match="latent size 4.*sac_gems_d8"):
        agent_gems(args, sim)
    args.agent, args.env = "sac_gems_d4_beta1_lc0.5_scratch_s1", "diffuse_mix"
    with pytest.raises(ArtifactError, match="'focused_topdown'.*'diffuse_mix'"):
        agent_gems(args, sim)
    args.env = "focused_topdown"
    assert agent_gems(args, sim).action_dim == 4


@pytest.mark.parametrize("damage", ["nan", "inconsistent"])
def test_logs_with_bad_returns_are_rejected_by_train_mf_and_pretrain_gems(logs_file, tmp_path, damage, capsys):
    from slate_rl.data.logs import load_logs

    logs = load_logs(logs_file)
    logs.returns = logs.returns.copy()
    logs.returns[7] = np.nan if damage == "nan" else logs.returns[7] + 3
    bad = tmp_path / "bad.npz"
    save_logs(bad, logs)
    for run in (_train_mf, _pretrain_gems):
        assert run(bad, tmp_path) == 2
        err = capsys.readouterr().err
        assert str(bad) in err and "'returns'" in err and "Traceback" not in err
        assert ("NaN" in err) if damage == "nan" else ("session 7" in err)


def test_a_dataset_of_a_redefined_environment_is_rejected(tmp_path):
    from test_offline_data import VALID, _meta

    from slate_rl.core.config import to_dict
    from slate_rl.core.errors import ArtifactError
    from slate_rl.data.d4rl import load_dataset, save_dataset
    from slate_rl.sim.config import make_env_config

    before = make_env_config("mine", {"mine": {"base": "focused_mix"}})
    after = make_env_config("mine", {"mine": {"base": "focused_mix", "diversity_penalty": 3.0}})
    path = tmp_path / "expert.npz"
    save_dataset(path, VALID, {**_meta(VALID), "env": "mine", "env_config": to_dict(before)})
    assert load_dataset(path, expect_env="mine", expect_env_config=to_dict(before)).metadata["env"] == "mine"
    with pytest.raises(ArtifactError, match=r"env_config.diversity_penalty' is 1.0, but environment 'mine' now has 3"):
        load_dataset(path, expect_env="mine", expect_env_config=to_dict(after))


# --------------------------------------------------------------------------- one line instead of a traceback


@pytest.mark.parametrize("name", ["mps", "xla", "meta"])
def test_unsupported_devices_are_one_error(name: str) -> None:
    from slate_rl.core.device import resolve_device

    with pytest.raises(ConfigError, match="not supported"):
        resolve_device(name)


def test_torch_allocation_failures_are_one_line(monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    import slate_rl.stages.make_embeddings as stage

    def fail(*_args, **_kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 800000000000 bytes.")

    monkeypatch.setattr(stage, "generate_item_embeddings", fail)
    assert main(["make-embeddings", "--kind", "focused", "--output", "x.npy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory") and "can't allocate memory" in err and "Traceback" not in err

    def bug(*_args, **_kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(stage, "generate_item_embeddings", bug)
    with pytest.raises(RuntimeError, match="shape mismatch"):  # other RuntimeErrors are bugs: traceback kept
        main(["make-embeddings", "--kind", "focused", "--output", "x.npy"])


def test_pickled_item_table_is_refused_without_torch_advice(tmp_path) -> None:
    import collections

    path = tmp_path / "evil.pt"
    torch.save(collections.OrderedDict(a=1), path)  # a Python object besides tensors: a weights_only refusal
    with pytest.raises(ArtifactError) as exc:
        load_item_embeddings(path)
    assert "weights_only=False" not in str(exc.value) and str(path) in str(exc.value)


# --------------------------------------------------------------------------- aggregate


def _seed_result(seed, **overrides) -> dict:
    return {"env": "e", "algo": "td3bc", "quality": "expert", "seed": seed, "return_mean": 1.0,
            "normalized_score": 50.0, "references": {}, "n_sessions": 5, **overrides}


@pytest.mark.parametrize("content, fragment", [
    (None, "both hold seed 0"),
    (b"\xff\xfe not utf-8", "unreadable result"),
    (json.dumps(_seed_result(1, references=[])).encode(), "'references'"),
    (json.dumps(_seed_result(1, return_mean="1.0")).encode(), "'return_mean'"),
    (json.dumps(_seed_result("zero")).encode(), "'seed'"),
    (json.dumps([1, 2]).encode(), "expected a JSON object"),
])
def test_aggregate_refuses_damaged_or_repeated_seed_files(tmp_path, capsys: pytest.CaptureFixture[str],
                                                          content: bytes | None, fragment: str) -> None:
    first = tmp_path / "seed0.json"
    first.write_text(json.dumps(_seed_result(0)))
    second = tmp_path / "seed1.json"
    if content is None:
        second = first
    else:
        second.write_bytes(content)
    assert main(["aggregate", "--inputs", str(first), str(second), "--output", str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err and "Traceback" not in err
    assert not (tmp_path / "out.json").exists()


def test_aggregate_on_an_npz_is_one_error(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, a=np.arange(3))
    assert main(["aggregate", "--inputs", str(path), "--output", str(tmp_path / "out.json")]) == 2
    assert "unreadable result" in capsys.readouterr().err


@pytest.mark.parametrize("make, argv", [
    ("dir", ["make-embeddings", "--kind", "focused", "--output", "{p}"]),
    ("file", ["export-dataset", "--dataset", "missing.npz", "--output-dir", "{p}"]),
    ("file", ["report", "--results-dir", "nowhere", "--figures-dir", "{p}", "--output", "{p}.md"]),
    ("dir", ["report", "--results-dir", "nowhere", "--output", "{p}", "--figures-dir", "{p}_figures"]),
])
def test_output_paths_of_the_wrong_kind_are_one_error(tmp_path, capsys: pytest.CaptureFixture[str], make: str,
                                                      argv: list[str]) -> None:
    p = tmp_path / "taken"
    p.mkdir() if make == "dir" else p.write_text("x")
    assert main([a.replace("{p}", str(p)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(p) in err and "Traceback" not in err


def test_bench_batch_sizes_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "sim", "--env", "focused_topdown", "--device", "cpu", "--batch-sizes", "0"]) == 2
    assert "--batch-sizes must be comma-separated positive integers" in capsys.readouterr().err


@pytest.mark.parametrize("raw, fragment", [
    ('{"num_items": 1e999}', "not a finite number"),
    ('{"x": NaN}', "not a finite number"),
    (b'{"env": "\xff"}', "not valid JSON metadata"),
    ("[1, 2]", "expected a JSON object"),
    (5, "expected JSON text"),
])
def test_crafted_metadata_is_one_error_naming_file_and_field(raw, fragment: str) -> None:
    from slate_rl.core.checks import metadata_object

    with pytest.raises(ArtifactError, match=fragment) as exc:
        metadata_object(raw, "agent/best.ckpt", "meta")
    assert "agent/best.ckpt: field 'meta'" in str(exc.value)
    assert metadata_object('{"num_items": 1000, "lr": 0.5}', "f", "meta") == {"num_items": 1000, "lr": 0.5}


def test_crafted_gems_and_dataset_metadata_via_loaders(tmp_path) -> None:
    from slate_rl.data.d4rl import load_dataset
    from slate_rl.models.rankers import load_gems_ranker, save_gems_ranker

    path = tmp_path / "gems.ckpt"
    save_gems_ranker(path, _tiny_gems())
    payload = torch.load(path, weights_only=True)
    payload["meta"] = '{"env_config": {"num_items": 1e999}}'
    torch.save(payload, path)
    with pytest.raises(ArtifactError, match=r"gems.ckpt: field 'meta'.*finite"):
        load_gems_ranker(path)
    payload["meta"], payload["architecture"] = "{}", "[]"
    torch.save(payload, path)
    with pytest.raises(ArtifactError, match="field 'architecture' is a JSON list"):
        load_gems_ranker(path)
    data = tmp_path / "d.npz"
    np.savez(data, a=np.arange(2))
    (tmp_path / "d.json").write_bytes(b"\xff\xfe")
    with pytest.raises(ArtifactError, match="d.json: field 'metadata' is not valid JSON metadata"):
        load_dataset(data)


def test_report_refuses_damaged_declared_inputs(tmp_path) -> None:
    from slate_rl.report.results import collect_results

    root = tmp_path / "results"
    good = {"env": "e", "agent": "slateq", "seed": 0, "return_mean": 1.0}
    cases = {"returns": {**good, "returns": ["1.0", "2.0"]}, "list": [good], "seed": {**good, "seed": "zero"}}
    for name, content in cases.items():
        path = root / "e/online/slateq/seed0.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content))
        assert collect_results(root).skipped, name  # a directory scan skips it, with a warning
        with pytest.raises(ArtifactError, match=str(path)):
            collect_results(root, [path])


@pytest.mark.parametrize("argv, option", [
    (["collect", "--env", "focused_mix", "--embeddings-file", "e.npy", "--quality", "expert", "--gems", "g",
      "--expert", "b", "--output", "o.npz", "--episodes", "100000000000"], "--episodes"),
    ([*EVAL, "--env", "focused_mix", "--sessions", "100000000000"], "--sessions"),
    ([*EVAL, "--env", "focused_mix", "--batch-size", "100000000000"], "--batch-size"),
])
def test_hand_written_size_options_have_the_config_bounds(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                          option: str) -> None:
    with pytest.raises(SystemExit):
        main(argv)
    err = capsys.readouterr().err
    assert f"argument {option}: must be <=" in err and "Traceback" not in err


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory no one can write: chmod 500 for a user, a read-only tmpfs for root (skipped where neither)."""
    import subprocess

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        (ro / "probe").touch()
    except OSError:
        yield ro
        ro.chmod(0o700)
        return
    (ro / "probe").unlink()
    ro.chmod(0o700)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True).returncode:
        pytest.skip("cannot make a read-only directory here (root, and no mount)")
    yield ro
    subprocess.run(["umount", str(ro)], check=False)


def test_an_unwritable_output_directory_is_refused_before_any_work(read_only_dir, tmp_path, capsys):
    from slate_rl.cli import main

    out = read_only_dir / "sub" / "items.npy"
    assert main(["make-embeddings", "--kind", "focused", "--num-items", "20", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not writable" in err and "--output" in err
    assert not (read_only_dir / "sub").exists()
    ok = tmp_path / "w" / "items.npy"
    assert main(["make-embeddings", "--kind", "focused", "--num-items", "20", "--output", str(ok)]) == 0
