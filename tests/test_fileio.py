"""Atomic writes: temp files of killed writers are cleaned, and records honour the umask."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from text_recognizer import fileio
from text_recognizer.errors import UserError


def _dead_pid() -> int:
    """A pid that certainly belongs to no process: one that has just exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_file_of_a_killed_writer_is_cleaned(tmp_path: Path) -> None:
    # A writer killed by SIGKILL mid-write leaves its temp file; the next writer removes it.
    code = (
        "import os, sys, time\n"
        "from text_recognizer.fileio import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_text('half')\n"
        "    print('ready', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "summary.json")], stdout=subprocess.PIPE
    )
    assert proc.stdout.readline().strip() == b"ready"
    live = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(live) == 1
    assert fileio.clean_stale_temps(tmp_path) == []  # its writer is alive: kept
    proc.kill()
    proc.wait()
    assert fileio.clean_stale_temps(tmp_path) == live
    assert not any(tmp_path.iterdir())


def test_cleaning_keeps_other_files_and_foreign_hosts_young_temps(tmp_path: Path) -> None:
    pid = _dead_pid()
    keep = [
        tmp_path / "summary.json",
        tmp_path / "notes.tmp",  # a user's file that merely ends in .tmp
        tmp_path / f".summary.json.otherhost-{pid}.abcd1234.tmp",  # another host: unknown writer
    ]
    for path in keep:
        path.write_text("x")
    stale_old = tmp_path / f".config.json.otherhost-{pid}.zz99zz99.tmp"
    stale_old.write_text("x")
    old = time.time() - fileio.STALE_TEMP_AGE_S - 60
    os.utime(stale_old, (old, old))
    assert fileio.clean_stale_temps(tmp_path) == [stale_old]
    assert all(path.exists() for path in keep)
    assert fileio.clean_stale_temps(tmp_path / "missing") == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        assert fileio.current_umask() == umask
        fileio.write_json_atomic(tmp_path / "summary.json", {"status": "finished"})
        fileio.append_jsonl(tmp_path / "metrics.jsonl", {"epoch": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "metrics.jsonl").stat().st_mode & 0o777 == mode


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "config.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), fileio.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_read_small_text_refuses_what_a_user_file_must_not_be(tmp_path: Path) -> None:
    from text_recognizer.errors import StorageError, UserError

    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # opening it for reading would block for ever without O_NONBLOCK
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2049)
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes('{"a": "é"}'.encode("latin-1"))
    cases = {
        fifo: "is not a regular file",
        tmp_path: "is not a regular file",
        big: "is over the size limit of 2 KiB",
        latin1: "is not UTF-8 text (byte 0xe9 at offset 7)",
        tmp_path / "missing.json": "does not exist",
    }
    for path, fragment in cases.items():
        with pytest.raises(UserError, match=f"^config file {path} {re.escape(fragment)}"):
            fileio.read_small_text(path, 2048, "config file")
    (tmp_path / "ok.json").write_text('{"a": "é"}', encoding="utf-8")
    assert fileio.read_small_text(tmp_path / "ok.json", 2048, "config file") == '{"a": "é"}'
    assert issubclass(StorageError, UserError)


def test_walk_files_lists_what_sorted_rglob_lists(tmp_path: Path) -> None:
    """The streamed walk (folder fingerprints, ImageTextDataset's listing) keeps rglob's order:
    a folder's files at its name's place, links to files in, links to folders not followed."""
    for rel in ("b.png", "a/x.png", "a.png", "a/b/c.txt", "a-b/y", "Z", "a/b.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / "empty").mkdir()
    (tmp_path / "link.png").symlink_to(tmp_path / "b.png")
    (tmp_path / "linked").symlink_to(tmp_path / "a", target_is_directory=True)
    expected = [
        p.relative_to(tmp_path).as_posix() for p in sorted(tmp_path.rglob("*")) if p.is_file()
    ]
    assert [rel for rel, _ in fileio.walk_files(tmp_path)] == expected
    assert "linked/x.png" not in expected and "link.png" in expected


def test_reading_a_small_file_allocates_its_size_not_the_limit(tmp_path: Path) -> None:
    """A 256 MB limit must not mean a 256 MB buffer for a 1 kB file (ImageTextDataset reads
    transcript files with that limit)."""
    import tracemalloc

    path = tmp_path / "labels.csv"
    path.write_text("a.png,word\n" * 100)
    tracemalloc.start()
    try:
        assert fileio.read_small_text(path, 256 << 20, "labels") == "a.png,word\n" * 100
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    with path.open("a") as f:  # over the limit: still refused
        f.write("x" * 5000)
    with pytest.raises(UserError, match="over the size limit"):
        fileio.read_small_text(path, 4096, "labels")
