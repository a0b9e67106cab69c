"""The one resume helper of the training loops (core.io.save_resume/load_resume): fingerprint, RNG, refusals; and
`train-agent` killed and rerun, ending with the bytes of an uninterrupted run (train-offline's kill tests:
tests/test_offline_loop.py)."""

from __future__ import annotations

import pytest
import torch

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
