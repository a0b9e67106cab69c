"""Reliability: what a careful user runs into: unsafe or stale work files, resumes
that outlive a config change, non-reproducible bytes, a full disk, orphan temp files and
validation gaps. Each test is the regression test of one defect."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from slate_rl.cli import main
from slate_rl.data.logs import LoggedSessions, save_logs
from slate_rl.sim.policies import EpsilonGreedyOracle
from slate_rl.sim.protocol import make_simulator
from slate_rl.sim.rollout import run_sessions

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def logs_file(tmp_path_factory) -> Path:
    """60 logged sessions of focused_topdown (a few seconds to train on)."""
    sim = make_simulator("focused_topdown")
    out = run_sessions(sim, EpsilonGreedyOracle(1000, 10, 0.5), 60, seed=3, batch_size=60, record=True)
    logs = LoggedSessions(out.slates, out.clicks, out.reset_slates, out.reset_clicks, out.returns.astype(np.float32),
                          {"env": "focused_topdown", "env_config": sim.config.__dict__})
    path = tmp_path_factory.mktemp("logs") / "focused_topdown.npz"
    save_logs(path, logs)
    return path


def _train_mf(logs: Path, out: Path, *extra: str) -> int:
    return main(["train-mf", "--logs", str(logs), "--max-epochs", "2", "--batch-size", "512", "--lr", "0.01",
                 "--device", "cpu", "--no-progress", "--logger-mode", "disabled", "--output", str(out / "mf.npy"),
                 "--metrics", str(out / "mf.json"), *extra])


def _pretrain_gems(logs: Path, out: Path, *extra: str) -> int:
    return main(["pretrain-gems", "--logs", str(logs), "--latent-dim", "4", "--epochs", "2", "--batch-size", "512",
                 "--bounds-sessions", "10", "--device", "cpu", "--no-progress", "--logger-mode", "disabled",
                 "--output", str(out / "gems.ckpt"), "--metrics", str(out / "gems.json"), *extra])


# --------------------------------------------------------------------------- 4. same seed, same bytes


def test_same_seed_gives_the_same_bytes_for_logs_mf_and_gems(tmp_path):
    from slate_rl.sim.embeddings import generate_item_embeddings

    table = tmp_path / "focused.npy"
    np.save(table, generate_item_embeddings("focused", 0, 1000, 10, 2))
    runs = [tmp_path / "a", tmp_path / "b"]
    for out in runs:
        assert main(["generate-logs", "--env", "focused_topdown", "--embeddings-file", str(table), "--sessions", "60",
                     "--batch-size", "60", "--device", "cpu", "--no-progress", "--output", str(out / "logs.npz")]) == 0
        assert _train_mf(out / "logs.npz", out) == 0
        assert _pretrain_gems(out / "logs.npz", out) == 0
    for name in ("logs.npz", "mf.npy", "mf.json", "gems.ckpt", "gems.json"):
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name
    # timings live apart, so that the results can be compared byte for byte
    timings = json.loads((runs[0] / "mf.timings.json").read_text())
    assert timings["train_seconds"] > 0 and "train_seconds" not in json.loads((runs[0] / "mf.json").read_text())
    assert "examples_per_second" in json.loads((runs[0] / "gems.timings.json").read_text())
    assert "steps_per_second" in json.loads((runs[0] / "logs.timings.json").read_text())
    assert not any(p.name.startswith(".") for out in runs for p in out.iterdir())  # no temp files left


# --------------------------------------------------------------------------- 1. work files run no code


class _Opens:
    """Unpickling this creates ``marker`` (the stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("crafted", ["points_at_pickle", "is_pickle"])
def test_a_crafted_work_checkpoint_runs_no_code(logs_file, tmp_path, crafted, capsys):
    marker = tmp_path / "code_ran"
    work = tmp_path / "out" / "gems.ckpt.work"
    work.mkdir(parents=True)
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": _Opens(marker)}, evil)
    if crafted == "points_at_pickle":  # plain data whose checkpoint callback names the pickle as the best model
        torch.save({"epoch": 0, "global_step": 1, "callbacks": {
            "ModelCheckpoint{'monitor': 'val_loss'}": {"best_model_path": str(evil), "last_model_path": str(evil)}}},
            work / "last.ckpt")
    else:
        torch.save({"callbacks": _Opens(marker)}, work / "last.ckpt")
    assert _pretrain_gems(logs_file, tmp_path / "out") == 0
    assert not marker.exists()
    assert "starting over" in capsys.readouterr().out
    assert (tmp_path / "out" / "gems.ckpt").is_file()


def test_checkpoint_loading_refuses_pickles_without_torchs_retry_hint(tmp_path):
    from slate_rl.core.errors import ArtifactError
    from slate_rl.core.io import load_checkpoint

    marker = tmp_path / "code_ran"
    path = tmp_path / "agent.ckpt"
    torch.save({"format": "x", "version": 1, "agent": _Opens(marker)}, path)
    with pytest.raises(ArtifactError) as exc:
        load_checkpoint(path, "x", 1, "agent checkpoint")
    msg = str(exc.value)
    assert str(path) in msg and "refused" in msg and "io.open" in msg
    assert "weights_only" not in msg and "trusted source" not in msg
    assert not marker.exists()
    path.write_bytes(b"not a checkpoint")  # garbage: unreadable, and no retry advice either
    with pytest.raises(ArtifactError, match="unreadable agent checkpoint") as exc:
        load_checkpoint(path, "x", 1, "agent checkpoint")
    assert "weights_only" not in str(exc.value) and "trusted source" not in str(exc.value)


# --------------------------------------------------------------------------- 5. MF/GeMS resume


def _killed_before_writing(monkeypatch, module: str, writer: str) -> None:
    def kill(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(f"slate_rl.stages.{module}.{writer}", kill)


def test_mf_rerun_with_other_settings_starts_over(logs_file, tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as m:
        _killed_before_writing(m, "train_mf", "save_npy")
        assert _train_mf(logs_file, tmp_path, "--dim", "8") == 130  # "killed": the work folder stays
    assert (tmp_path / "mf.npy.work" / "last.ckpt").is_file()
    assert _train_mf(logs_file, tmp_path, "--dim", "6") == 0
    assert "other inputs or settings; starting over" in capsys.readouterr().out
    assert np.load(tmp_path / "mf.npy").shape == (1000, 6)
    assert not (tmp_path / "mf.npy.work").exists()


def test_gems_rerun_with_other_settings_starts_over(logs_file, tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as m:
        _killed_before_writing(m, "pretrain_gems", "save_gems_ranker")
        assert _pretrain_gems(logs_file, tmp_path) == 130
    assert _pretrain_gems(logs_file, tmp_path, "--latent-dim", "6") == 0
    assert "starting over" in capsys.readouterr().out
    assert json.loads((tmp_path / "gems.json").read_text())["config"]["latent_dim"] == 6


def test_a_resumed_gems_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    """Shuffle order keyed by the epoch and torch's RNG (sampling of z) restored on resume."""
    from slate_rl.data.batches import TensorBatches
    from slate_rl.models.gems_system import GeMSSystem
    from slate_rl.models.training import fit, seed_all

    g = torch.Generator().manual_seed(0)
    data = {"slates": torch.randint(0, 1000, (600, 10), generator=g), "clicks": torch.rand(600, 10, generator=g) < 0.2}
    val = {k: v[:100] for k, v in data.items()}

    def run(epochs: int, work: Path) -> GeMSSystem:
        seed_all(5)
        system = GeMSSystem(latent_dim=4)
        fit(system, TensorBatches(data, 128, seed=5), TensorBatches(val, 512, shuffle=False), work,
            torch.device("cpu"), max_epochs=epochs, logger_mode="disabled", progress=False, seed=5,
            fingerprint="same")
        return system

    straight = run(3, tmp_path / "a")
    run(1, tmp_path / "b")  # "killed" after its first epoch: last.ckpt stays in the work folder
    resumed = run(3, tmp_path / "b")
    for (name, p), (_, q) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(p, q), name


# --------------------------------------------------------------------------- 6. full disk


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("writer", ["json", "npz", "npy"])
def test_a_full_disk_is_one_error_naming_the_file_and_the_space(tmp_path, monkeypatch, writer):
    from slate_rl.core.errors import ArtifactError
    from slate_rl.core.io import save_npy, save_npz, write_json

    arrays = {"a": np.zeros(250_000, dtype=np.float32)}  # 1 MB
    if writer == "json":
        monkeypatch.setattr(Path, "write_text", _no_space)
    else:
        monkeypatch.setattr(np.lib.format, "write_array", _no_space)
    target = tmp_path / f"out.{writer}"
    with pytest.raises(ArtifactError) as exc:
        {"json": lambda: write_json(target, {"a": 1}), "npz": lambda: save_npz(target, arrays),
         "npy": lambda: save_npy(target, arrays["a"])}[writer]()
    msg = str(exc.value)
    assert str(target) in msg and "no space left" in msg and "free" in msg
    if writer != "json":
        assert "1.0 MB" in msg  # the space the file needs
    assert list(tmp_path.iterdir()) == []  # nothing partial left


def test_a_full_disk_under_torch_save_is_one_error(tmp_path, monkeypatch):
    """torch's C++ writer reports a full disk as "unexpected pos"; the free space tells."""
    import shutil

    from slate_rl.core.errors import ArtifactError
    from slate_rl.core.io import atomic_path

    def torch_full_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", torch_full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    target = tmp_path / "last.ckpt"
    with pytest.raises(ArtifactError, match="no space left") as exc, atomic_path(target) as tmp:
        torch.save({"x": torch.zeros(3)}, tmp)
    assert str(target) in str(exc.value) and "200 bytes" not in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_via_the_cli_prints_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Path, "write_text", _no_space)
    out = tmp_path / "random.json"
    rc = main(["evaluate-policy", "--policy", "random", "--device", "cpu", "--env", "focused_topdown",
               "--sessions", "4", "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and str(out) in err and "no space left" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- 7. orphan temp files


def test_a_killed_writers_temp_files_are_removed_by_the_next_write(tmp_path):
    import subprocess
    import sys

    from slate_rl.core.io import _host, atomic_path, temp_files, write_json

    target = tmp_path / "last.ckpt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    orphan = tmp_path / f".last.ckpt.{_host()}.{int(dead.stdout)}.k2j4h1_x.tmp.ckpt"  # a killed writer's
    orphan.write_bytes(b"\0" * 1000)
    other = tmp_path / f".best.ckpt.{_host()}.{int(dead.stdout)}.k2j4h1_x.tmp.ckpt"  # another target's: not ours
    other.write_bytes(b"\0")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert not orphan.exists() and other.exists()
    # a writer interrupted mid-write removes its own temp file
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"new" and temp_files(target) == []
    write_json(tmp_path / "r.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "last.ckpt", "r.json"]


# --------------------------------------------------------------------------- 2. online resume


def _train_agent(tmp_path: Path, total_steps: int, env_spec: dict[str, object],
                 extra: tuple[str, ...] = ()) -> dict[str, object]:
    from slate_rl.sim.embeddings import generate_item_embeddings

    table = tmp_path / "focused.npy"
    if not table.is_file():
        np.save(table, generate_item_embeddings("focused", 0, 1000, 10, 2))
    out = tmp_path / "agent"
    rc = main(["train-agent", "--env", "mine", "--env-spec", json.dumps(env_spec), "--embeddings-file", str(table),
               "--agent", "sac_topk_ideal", "--seed", "1", "--test-sessions", "4", "--total-steps", str(total_steps),
               "--sessions-per-step", "2", "--batch-size", "2", "--warmup-sessions", "2", "--val-interval", "1",
               "--val-sessions", "4", "--checkpoint-interval", "1", "--hidden", "16", "--device", "cpu",
               "--no-progress", "--logger-mode", "disabled", "--output-dir", str(out),
               "--results", str(tmp_path / "seed1.json"), *extra])
    assert rc == 0
    assert (out / "last.ckpt").is_file() and not (out / "last.work.ckpt").exists()  # last.ckpt: a rule output
    return json.loads((tmp_path / "seed1.json").read_text())


def test_online_resume_follows_the_environment_and_the_schedule(tmp_path, capsys):
    env = {"base": "focused_topdown"}
    first = _train_agent(tmp_path, 2, env)
    assert [s for s, _ in first["learning_curve"]] == [1, 2]
    extended = _train_agent(tmp_path, 3, env)  # extending a finished run continues it
    assert "starting over" not in capsys.readouterr().out
    assert extended["learning_curve"][:2] == first["learning_curve"] and len(extended["learning_curve"]) == 3
    shorter = _train_agent(tmp_path, 2, env)  # a shorter run must not keep the longer curve
    assert "past total_steps=2; starting over" in capsys.readouterr().out
    assert shorter["learning_curve"] == first["learning_curve"]  # same seed, trained again from the start
    redefined = _train_agent(tmp_path, 2, {"base": "focused_topdown", "diversity_penalty": 3.0})
    assert "other inputs or settings; starting over" in capsys.readouterr().out
    assert redefined["env_config"]["diversity_penalty"] == 3.0
    assert "train_seconds" not in redefined and (tmp_path / "seed1.timings.json").is_file()


def test_online_resume_ignores_the_settings_of_other_agents(tmp_path, capsys):
    """A SAC run's metadata and resume fingerprint hold the sac section only: other agents' settings (slateq,
    reinforce) neither discard its resume nor appear in its results."""
    env = {"base": "focused_topdown"}
    first = _train_agent(tmp_path, 2, env)
    assert "sac" in first and "slateq" not in first and "reinforce" not in first
    extended = _train_agent(tmp_path, 3, env, ("--slateq-lr", "0.5", "--reinforce-lr", "0.5"))
    assert "starting over" not in capsys.readouterr().out
    assert extended["learning_curve"][:2] == first["learning_curve"] and len(extended["learning_curve"]) == 3
    _train_agent(tmp_path, 3, env, ("--q-lr", "0.5"))  # its own section still counts
    assert "other inputs or settings; starting over" in capsys.readouterr().out


def test_online_validation_leaves_the_training_rng_alone(monkeypatch):
    from slate_rl.online import loop

    monkeypatch.setattr(loop, "policy_returns", lambda *args: torch.rand(4))  # a validation that draws numbers
    torch.manual_seed(0)
    before = torch.get_rng_state()
    loop.evaluate(None, None, seed=1, sessions=4)  # type: ignore[arg-type]
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.e2e
def test_last_checkpoint_is_an_output_of_the_online_rule_and_an_input_of_replay_datasets(tmp_path):
    from test_workflow import TINY, snakemake

    res = snakemake("-n", "-p", "data/offline/diffuse_mix/replay.npz", "--configfile", str(TINY), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    text = res.stdout + res.stderr
    last = "data/agents/diffuse_mix/sac_gems_d8_beta1_lc0.5_scratch_s58407201/seed0/last.ckpt"
    jobs = {block.split("\n", 1)[0].strip(): block for block in text.split("rule ")[1:]}
    assert last in jobs["online_agent:"].split("output:")[1].split("\n")[0]
    assert last in jobs["offline_dataset:"].split("input:")[1].split("\n")[0]


# --------------------------------------------------------------------------- 8. validation gaps


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


def test_a_yaml_syntax_error_names_file_and_line(tmp_path):
    from slate_rl.core.config import load_yaml
    from slate_rl.core.errors import ConfigError

    path = tmp_path / "config.yaml"
    path.write_text("logs:\n  sessions: 10\n  epsilon: [0.5\nmf:\n  dim: 3\n")
    with pytest.raises(ConfigError) as exc:
        load_yaml(path)
    assert str(path) in str(exc.value) and "line 4" in str(exc.value)


@pytest.mark.e2e
def test_a_yaml_syntax_error_in_config_yaml_stops_snakemake_with_file_and_line(tmp_path):
    import shutil
    import subprocess
    import sys

    from test_workflow import REPO

    shutil.copy(REPO / "Snakefile", tmp_path / "Snakefile")
    shutil.copytree(REPO / "workflow", tmp_path / "workflow")
    (tmp_path / "config.yaml").write_text((REPO / "config.yaml").read_text().replace("\nlogs:", "\nlogs: [", 1))
    exe = shutil.which("snakemake", path=os.path.dirname(sys.executable)) or "snakemake"
    res = subprocess.run([exe, "-n", "--snakefile", str(tmp_path / "Snakefile"), "--directory", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    assert f"{tmp_path / 'config.yaml'}, line" in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]


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
