"""Operating-system failures are one line naming the path, and leave what was there intact:
an --out that is a file or under a file, a read-only file system, a full disk (the Python
writers and safetensors' Rust writer), stale temporary files of a killed writer, and file
permissions that follow the umask."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

import flexsnn.io as fio
from flexsnn.cli import error_message, main
from flexsnn.errors import StorageError
from flexsnn.io import atomic_write, read_json, remove_stale_temp_files, save_arrays, write_json
from flexsnn.train import checkpoint as ckpt
from flexsnn.train.checkpoint import load_safetensors, save_safetensors

WRITERS = {
    "json": lambda p: write_json(p, {"a": 1}),
    "arrays": lambda p: save_arrays(p, {"x": torch.arange(3).numpy()}),
    "safetensors": lambda p: save_safetensors(p, {"a": torch.ones(3)}, {"k": 1}),
    "text": lambda p: _write_text(p),
}


def _write_text(path):
    with atomic_write(path) as tmp:
        tmp.write_text("x")


@pytest.mark.parametrize("writer", WRITERS)
def test_writing_under_a_file_or_onto_a_folder_is_one_line_naming_the_path(tmp_path, writer):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    (tmp_path / "a_folder").mkdir()
    for target, reason in (
        (blocker / "x.out", f"{blocker} is a file, not a folder"),
        (blocker / "sub" / "x.out", f"{blocker} is a file, not a folder"),
        (tmp_path / "a_folder", "Is a directory"),
    ):
        with pytest.raises(StorageError, match=reason) as err:
            WRITERS[writer](target)
        assert str(target) in str(err.value) and "\n" not in str(err.value)
    assert blocker.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "a_folder"]


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOSPC, errno.EDQUOT])
def test_a_refused_create_keeps_the_old_file(tmp_path, monkeypatch, code):
    target = tmp_path / "c.json"
    write_json(target, {"v": 1})
    real_open = os.open

    def refusing_open(path, flags, mode=0o777, **kw):
        if str(path).endswith(".tmp"):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(fio.os, "open", refusing_open)
    with pytest.raises(StorageError, match=os.strerror(code)) as err:
        write_json(target, {"v": 2})
    assert f"cannot write {target}" in str(err.value)
    monkeypatch.undo()
    assert read_json(target) == {"v": 1}


def test_safetensors_disk_full_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.safetensors"
    save_safetensors(path, {"a": torch.ones(3)}, {"epoch": 1})
    before = path.read_bytes()

    def full_disk(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    monkeypatch.setattr(ckpt, "save_file", full_disk)
    with pytest.raises(StorageError, match=rf"^cannot write {path}: No space left on device$"):
        save_safetensors(path, {"a": torch.zeros(3)}, {"epoch": 2})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert load_safetensors(path, "checkpoint")[1] == {"epoch": 1}


FULL_DISK_SCRIPT = textwrap.dedent("""
    import resource, sys, torch
    from flexsnn.errors import StorageError
    from flexsnn.io import write_json
    from flexsnn.train.checkpoint import save_safetensors
    folder = sys.argv[1]
    save_safetensors(folder + "/c.safetensors", {"a": torch.ones(10)}, {"epoch": 1})
    write_json(folder + "/c.json", {"epoch": 1})
    resource.setrlimit(resource.RLIMIT_FSIZE, (32768, 32768))  # writes beyond 32 KiB fail: EFBIG
    for write in (lambda: save_safetensors(folder + "/c.safetensors", {"a": torch.ones(100_000)}, {"epoch": 2}),
                  lambda: write_json(folder + "/c.json", {"epoch": 2, "pad": "x" * 100_000})):
        try:
            write()
        except StorageError as exc:
            print(exc)
""")


def test_a_real_write_limit_hits_both_writers_with_one_line_each(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK_SCRIPT, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"cannot write {tmp_path}/c.safetensors: File too large",
        f"cannot write {tmp_path}/c.json: File too large",
    ]
    assert load_safetensors(tmp_path / "c.safetensors", "checkpoint")[1] == {"epoch": 1}
    assert read_json(tmp_path / "c.json") == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.safetensors"]  # no temp files left


def test_files_are_created_with_the_process_umask(tmp_path):
    old = os.umask(0o022)
    try:
        for name, write in WRITERS.items():
            write(tmp_path / name)
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
        os.umask(0o077)
        write_json(tmp_path / "private.json", {})
        assert stat.S_IMODE((tmp_path / "private.json").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_stale_temp_files_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".checkpoint.safetensors.{dead_pid}-0badf00d.tmp"
    old_style = tmp_path / ".config.json.k2j4_x9q.tmp"  # an older flexsnn's mkstemp name
    live = tmp_path / f".model.safetensors.{os.getppid()}-00c0ffee.tmp"  # the parent is alive
    mine = tmp_path / f".metrics.json.{os.getpid()}-00c0ffee.tmp"
    user = tmp_path / ".notes.tmp"  # not ours: never touched
    for p in (stale, old_style, live, mine, user):
        p.write_text("x")
    # writing one file clears only that file's stale temporaries
    save_safetensors(tmp_path / "checkpoint.safetensors", {"a": torch.ones(1)})
    assert not stale.exists() and old_style.exists()
    removed = remove_stale_temp_files(tmp_path)
    assert removed == [old_style]
    assert live.exists() and mine.exists() and user.exists()


def test_cli_maps_every_os_error_to_one_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for out in (blocker, blocker / "run"):
        assert (
            main(["demo", "--out", str(out), "--epochs", "1", "--t-max", "1", "--model", "digits_mlp", "--quiet"]) == 2
        )
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(blocker) in err and "Traceback" not in err, err
    assert blocker.read_text() == "x"
    for exc, expected in [
        (
            OSError(errno.ENOSPC, "No space left on device", "/r/model.safetensors"),
            "No space left on device: /r/model.safetensors",
        ),
        (
            OSError(errno.EROFS, "Read-only file system", "/mnt/r", None, "/mnt/r2"),
            "Read-only file system: /mnt/r -> /mnt/r2",
        ),
        (
            SafetensorError("Error while serializing: I/O error: File too large (os error 27)"),
            "safetensors file: Error while serializing: I/O error: File too large (os error 27)",
        ),
    ]:
        assert error_message(exc).endswith(expected)
