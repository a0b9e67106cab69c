"""CPU threads: every stage takes ``--threads`` (Snakemake passes the rule's ``threads``), with a default
from the environment outside Snakemake, and one clear error for a bad value."""

from __future__ import annotations

import pytest
import torch

from slate_rl.cli import build_parser, main
from slate_rl.core.device import THREADS_ENV, available_cpus, default_threads, set_threads
from slate_rl.core.errors import ConfigError


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    before = torch.get_num_threads()
    for var in (THREADS_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
    yield
    torch.set_num_threads(before)


def test_every_stage_accepts_threads():
    parser = build_parser()
    stages = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert len(stages) >= 12
    for name, sub in stages.items():
        assert any("--threads" in a.option_strings for a in sub._actions), f"stage {name} lacks --threads"


def test_set_threads_sets_torch_and_the_environment(monkeypatch):
    assert set_threads(1) == 1 and torch.get_num_threads() == 1
    import os
    assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ["MKL_NUM_THREADS"] == "1"


def test_default_threads_comes_from_the_environment_then_the_cores(monkeypatch):
    assert 1 <= default_threads() <= available_cpus()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    monkeypatch.setenv(THREADS_ENV, "1")
    assert default_threads() == 1


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_thread_counts_give_one_clear_error(monkeypatch, capsys, value):
    monkeypatch.setenv(THREADS_ENV, value)
    with pytest.raises(ConfigError, match=THREADS_ENV):
        default_threads()
    # through the command line: one line naming the variable, exit status 2
    assert main(["aggregate", "--inputs", "none.json", "--output", "out.json"]) == 2
    assert THREADS_ENV in capsys.readouterr().err
    monkeypatch.delenv(THREADS_ENV)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["aggregate", "--threads", value, "--inputs", "x", "--output", "y"])


def test_threads_flag_reaches_torch(tmp_path):
    # a stage that fails on its input still ran with the requested threads
    main(["aggregate", "--threads", "1", "--inputs", str(tmp_path / "missing.json"), "--output", str(tmp_path / "o")])
    assert torch.get_num_threads() == 1


def test_a_stage_imports_only_its_own_module():
    import subprocess
    import sys

    from slate_rl.cli import STAGES, stage_modules
    assert stage_modules(["aggregate", "--inputs", "x"]) == ("slate_rl.stages.aggregate",)
    assert stage_modules(["train-offline"]) == ("slate_rl.stages.train_offline",)
    assert stage_modules([]) == STAGES and stage_modules(["--help"]) == STAGES and stage_modules(["bogus"]) == STAGES
    assert stage_modules(["train_offline"]) == STAGES  # the module's name is not the command's
    # jobs that do not train GeMS or MF start without Lightning (2-4 s per Snakemake job on a small CPU)
    for stage in ("make-embeddings", "train-offline", "train-agent"):
        code = ("import sys; from slate_rl.cli import main\n"
                f"try: main([{stage!r}, '--help'])\nexcept SystemExit: pass\n"
                "print('lightning' in sys.modules)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip().splitlines()[-1] == "False", stage


def test_every_stage_process_runs_openmp_with_the_passive_wait_policy():
    """`slate-rl` sets OMP_WAIT_POLICY=PASSIVE before torch (and its OpenMP runtime) loads, whatever command
    started it (a bare `snakemake`, a shell): idle threads sleep instead of spinning on cores other jobs use.
    A value the user set is kept."""
    import os
    import subprocess
    import sys

    code = ("import os, sys; from slate_rl.cli import main\n"
            "assert 'torch' not in sys.modules\n"
            "try: main(['train-offline', '--help'])\nexcept SystemExit: pass\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split()[-2:] == ["PASSIVE", "True"]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**env, "OMP_WAIT_POLICY": "ACTIVE"}).stdout
    assert out.split()[-2:] == ["ACTIVE", "True"]
