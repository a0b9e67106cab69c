"""core.io.atomic_path with several writers: unique temporary files, no deleting another writer's file,
no writing through a symlink, and torch checkpoints whose bytes do not depend on the temporary name."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

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
