"""The one resume helper of the training loops (core.io.save_resume/load_resume): fingerprint, RNG, refusals."""

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
