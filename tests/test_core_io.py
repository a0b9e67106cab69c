"""core.io: atomic_path with several writers (unique temporary files, no deleting another writer's file, no writing
through a symlink, torch checkpoints whose bytes do not depend on the temporary name), the temp files of a killed
writer, a full disk as one error, and checkpoint loading that runs no code (pickles and crafted work checkpoints
are refused)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from test_resume import _pretrain_gems

from slate_rl.cli import main
from slate_rl.core.io import _host, atomic_path, remove_stale_temp_files, save_torch, temp_files, write_json

# A writer process: writes `count` times its own content (`size` bytes of its letter) to `target`.
WRITER = """
import sys
from slate_rl.core.io import atomic_path
target, letter, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for _ in range(count):
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        for _ in range(size // 4096):
            fh.write(letter.encode() * 4096)
"""


def test_two_writers_of_one_output_never_break_each_other(tmp_path):
    """Two processes write the same path at once, many times: each finishes without an error and the file at
    the path is, whenever it is read, one writer's complete content."""
    target = tmp_path / "logs.npz"
    size, count = 1 << 18, 60
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(target), letter, str(count), str(size)],
                                stderr=subprocess.PIPE, text=True, env=env) for letter in "ab"]
    whole = {b"a" * size, b"b" * size}
    reads = 0
    while any(w.poll() is None for w in writers):
        if target.is_file():
            assert target.read_bytes() in whole
            reads += 1
    errors = [w.communicate()[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    assert target.read_bytes() in whole and reads > 0
    assert temp_files(target) == []  # each writer renamed or removed its own file


def test_a_symlink_at_a_temporary_name_is_not_written_through(tmp_path, monkeypatch):
    target, victim = tmp_path / "out.json", tmp_path / "elsewhere" / "victim.json"
    names = iter(["planted", "fresh"])
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: names)
    planted = tmp_path / f".out.json.{_host()}.{os.getpid()}.planted.tmp.json"
    planted.symlink_to(victim)  # dangling: writing through it would create the victim
    write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n' and not victim.exists()
    assert planted.is_symlink()  # not ours: left as it is
    assert sorted(p.name for p in tmp_path.iterdir()) == [planted.name, "out.json"]


def test_only_the_temp_files_of_dead_writers_on_this_host_are_removed(tmp_path):
    target = tmp_path / "last.ckpt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    files = {
        "dead": tmp_path / f".last.ckpt.{_host()}.{int(dead.stdout)}.abc_1.tmp.ckpt",
        "alive": tmp_path / f".last.ckpt.{_host()}.{os.getppid()}.abc_2.tmp.ckpt",  # a live writer's
        "other host": tmp_path / f".last.ckpt.{_host()}x.{int(dead.stdout)}.abc_3.tmp.ckpt",
        "not a temp name": tmp_path / ".last.ckpt.notes.tmp.ckpt",
    }
    for f in files.values():
        f.write_bytes(b"x")
    assert remove_stale_temp_files(target) == [files["dead"]]
    assert [k for k, f in files.items() if f.exists()] == ["alive", "other host", "not a temp name"]


def test_each_write_has_its_own_temporary_file(tmp_path):
    target = tmp_path / "x.json"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second and first.is_file() and second.is_file()
        assert first.suffix == second.suffix == ".json" and first.parent == tmp_path
        first.write_text("1")
        second.write_text("2")
    assert target.read_text() == "1"  # the outer block renames last


@pytest.mark.parametrize("name", ["a.ckpt", "b.pt"])
def test_torch_checkpoints_do_not_depend_on_their_temporary_name(tmp_path, name):
    payload = {"w": torch.arange(6.0).reshape(2, 3), "meta": "x"}
    save_torch(tmp_path / "one" / name, payload)
    save_torch(tmp_path / "two" / name, payload)
    first = (tmp_path / "one" / name).read_bytes()
    assert first == (tmp_path / "two" / name).read_bytes()
    assert b".tmp" not in first  # the zip records are not named after the temporary file


# --------------------------------------------------------------------------- orphan temp files


@pytest.mark.usefixtures("single_thread")
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


# --------------------------------------------------------------------------- full disk


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("writer", ["json", "npz", "npy"])
@pytest.mark.usefixtures("single_thread")
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


@pytest.mark.usefixtures("single_thread")
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


@pytest.mark.usefixtures("single_thread")
def test_a_full_disk_via_the_cli_prints_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Path, "write_text", _no_space)
    out = tmp_path / "random.json"
    rc = main(["evaluate-policy", "--policy", "random", "--device", "cpu", "--env", "focused_topdown",
               "--sessions", "4", "--output", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and str(out) in err and "no space left" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- work files run no code


class _Opens:
    """Unpickling this creates ``marker`` (the stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("crafted", ["points_at_pickle", "is_pickle"])
@pytest.mark.usefixtures("single_thread")
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


@pytest.mark.usefixtures("single_thread")
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
