"""The one resume helper of the training loops (core.io.save_resume/load_resume): fingerprint, RNG, refusals;
`train-agent` killed and rerun, ending with the bytes of an uninterrupted run (train-offline's kill tests:
tests/test_offline_loop.py); MF and GeMS reruns with other settings starting over, a resumed GeMS run ending with
the weights of an uninterrupted one; online resumes following the environment, the schedule and the agent's own
settings only. ``_train_mf`` and ``_pretrain_gems`` (the stages on a logs file, e.g. conftest's ``logs_file``)
serve other test files too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from slate_rl.cli import main
from slate_rl.core.errors import ArtifactError
from slate_rl.core.io import load_resume, save_resume, temp_files


def test_resume_restores_the_state_and_every_random_generator(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.manual_seed(3)
    generator = torch.Generator().manual_seed(5)
    save_resume(path, {"step": torch.tensor(7)}, "abc", generator)
    want_global, want_own = torch.rand(3), torch.rand(3, generator=generator)
    assert temp_files(path) == []  # atomic: only the final file is left

    torch.manual_seed(99)
    other = torch.Generator().manual_seed(99)
    seen: dict[str, int] = {}
    assert load_resume(path, "abc", lambda payload: seen.update(step=int(payload["step"])), other) is None
    assert seen == {"step": 7}
    assert torch.equal(torch.rand(3), want_global) and torch.equal(torch.rand(3, generator=other), want_own)


def test_resume_refuses_another_run_and_reports_why(tmp_path):
    path = tmp_path / "last.ckpt"
    save_resume(path, {"step": torch.tensor(1)}, "abc")
    calls = []
    assert load_resume(path, "other", calls.append) == "written by a run with other inputs or settings"
    assert calls == []  # nothing restored
    assert load_resume(path, "abc", lambda payload: "past total_steps") == "past total_steps"


def test_a_checkpoint_of_this_run_that_does_not_fit_is_one_clear_error(tmp_path):
    path = tmp_path / "last.ckpt"
    save_resume(path, {"step": torch.tensor(1)}, "abc")
    with pytest.raises(ArtifactError, match="resume checkpoint does not fit this run"):
        load_resume(path, "abc", lambda payload: payload["missing"])


@pytest.mark.parametrize(("agent", "seeds"), [
    ("sac_topk_ideal", ["--seed", "1"]), ("sac_topk_ideal", ["--seeds", "1,2"]), ("reinforce", ["--seed", "1"]),
], ids=["sac-seed", "sac-seeds", "reinforce"])
def test_a_killed_train_agent_reruns_to_the_bytes_of_an_uninterrupted_run(tmp_path, kill_at_call, capsys, agent,
                                                                           seeds):
    """`train-agent --seed 1` of a SAC agent (train_seeds with one seed) and of REINFORCE (train_online), and
    `--seeds 1,2` of a SAC agent (trained together), killed at the validation of step 3 (after the checkpoint of
    step 2: step 3's sessions and updates are lost) or while testing (after the final checkpoint, the last seed's
    test), then rerun: it resumes from every seed's last.work.ckpt and writes, for every seed, the best.ckpt,
    medium.ckpt, last.ckpt and results JSON of an uninterrupted run, byte for byte."""
    from test_multiseed import _stage
    from test_offline_loop import _digests

    from slate_rl.core.io import read_resume_checkpoint
    from slate_rl.online import loop
    from slate_rl.stages import train_agent

    group = seeds[0] == "--seeds"
    tag, names = ("{seed}", (1, 2)) if group else ("1", (1,))
    outputs = [f"r{s}.json" for s in names] + [f"a{s}/{f}" for s in names for f in ("best.ckpt", "medium.ckpt",
                                                                                     "last.ckpt")]
    kills = {"training": ((loop, "evaluate_seeds" if agent.startswith("sac") else "evaluate"), 3, 2),
             "testing": ((train_agent, "evaluate"), len(names), 4)}

    def run(name: str) -> int:
        return _stage(tmp_path, agent, seeds, str(tmp_path / name / f"a{tag}"),
                      str(tmp_path / name / f"r{tag}.json"), ["--total-steps", "4", "--checkpoint-interval", "2"])

    assert run("whole") == 0
    for name, ((module, function), call, step) in kills.items():
        kill_at_call(module, function, call)
        assert run(name) == 130
        for s in names:
            assert int(read_resume_checkpoint(tmp_path / name / f"a{s}" / "last.work.ckpt")["counters"][0]) == step
        for output in outputs:  # Snakemake deletes the outputs of a failed job (last.ckpt too, not last.work.ckpt)
            (tmp_path / name / output).unlink(missing_ok=True)
        capsys.readouterr()
        assert run(name) == 0
        out = capsys.readouterr().out
        assert "starting over" not in out and "starts over" not in out  # resumed (the checkpoints are there)
        assert _digests(tmp_path / name, *outputs) == _digests(tmp_path / "whole", *outputs), name


# --------------------------------------------------------------------------- MF/GeMS rerun and resume


def _train_mf(logs: Path, out: Path, *extra: str) -> int:
    return main(["train-mf", "--logs", str(logs), "--max-epochs", "2", "--batch-size", "512", "--lr", "0.01",
                 "--device", "cpu", "--no-progress", "--logger-mode", "disabled", "--output", str(out / "mf.npy"),
                 "--metrics", str(out / "mf.json"), *extra])


def _pretrain_gems(logs: Path, out: Path, *extra: str) -> int:
    return main(["pretrain-gems", "--logs", str(logs), "--latent-dim", "4", "--epochs", "2", "--batch-size", "512",
                 "--bounds-sessions", "10", "--device", "cpu", "--no-progress", "--logger-mode", "disabled",
                 "--output", str(out / "gems.ckpt"), "--metrics", str(out / "gems.json"), *extra])


def _killed_before_writing(monkeypatch, module: str, writer: str) -> None:
    def kill(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(f"slate_rl.stages.{module}.{writer}", kill)


@pytest.mark.usefixtures("single_thread")
def test_mf_rerun_with_other_settings_starts_over(logs_file, tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as m:
        _killed_before_writing(m, "train_mf", "save_npy")
        assert _train_mf(logs_file, tmp_path, "--dim", "8") == 130  # "killed": the work folder stays
    assert (tmp_path / "mf.npy.work" / "last.ckpt").is_file()
    assert _train_mf(logs_file, tmp_path, "--dim", "6") == 0
    assert "other inputs or settings; starting over" in capsys.readouterr().out
    assert np.load(tmp_path / "mf.npy").shape == (1000, 6)
    assert not (tmp_path / "mf.npy.work").exists()


@pytest.mark.usefixtures("single_thread")
def test_gems_rerun_with_other_settings_starts_over(logs_file, tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as m:
        _killed_before_writing(m, "pretrain_gems", "save_gems_ranker")
        assert _pretrain_gems(logs_file, tmp_path) == 130
    assert _pretrain_gems(logs_file, tmp_path, "--latent-dim", "6") == 0
    assert "starting over" in capsys.readouterr().out
    assert json.loads((tmp_path / "gems.json").read_text())["config"]["latent_dim"] == 6


@pytest.mark.usefixtures("single_thread")
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


# --------------------------------------------------------------------------- online resume


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


@pytest.mark.usefixtures("single_thread")
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


@pytest.mark.usefixtures("single_thread")
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
