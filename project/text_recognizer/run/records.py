"""Run records (docs/design.md §5): runs/<group>/<run_name>/ with config, per-epoch metrics and a summary.

Every file is written atomically, so a crash or kill never leaves half a JSON document behind.
A run holds an ``flock`` on its folder (``.lock`` says who) for as long as it writes there (the kernel drops
it however the process ends, as with the GPU leases), so a second writer (``--resume`` of a run
still running) is refused. While it runs it also keeps ``.space-reserve``, a little disk space given
back on a full disk so that the record can still say ``failed``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import stat
import time
from pathlib import Path
from typing import Any

from text_recognizer import paths, progress
from text_recognizer.errors import ConfigError, UserError, one_line, storage_error
from text_recognizer.fileio import (
    append_jsonl,
    clean_stale_temps,
    read_small_text,
    write_json_atomic,
    write_text_atomic,
)

LOCK_NAME, RESERVE_NAME = ".lock", ".space-reserve"
CHECKPOINT_NAMES = ("checkpoint.pt", "checkpoint.prev.pt")
# Every file a run writes into its folder (besides plots, *.png): what no other command may overwrite.
RECORD_NAMES = frozenset(
    {
        "config.json",
        "metrics.jsonl",
        "summary.json",
        "weights.pt",
        "predictions.json",
        "error.log",
        *CHECKPOINT_NAMES,
        LOCK_NAME,
        RESERVE_NAME,
    }
)
RESERVE_BYTES = 64 << 10  # room for summary.json and error.log once the disk is full
MAX_RECORD_BYTES = 16 << 20
# Bounds for reading run records, which may be damaged or not ours: no file is read whole past these.
MAX_JSON_BYTES = 16 << 20
MAX_HISTORY_BYTES = 64 << 20
# run folder -> this process's locked descriptor of it, and of its .lock (which names the holder)
_LOCKS: dict[Path, tuple[int, int]] = {}


def slug(text: str) -> str:
    """A folder-safe form of a group or run name ("Sample Experiments" -> "sample-experiments")."""
    return re.sub(r"[^a-z0-9._+=-]+", "-", text.lower()).strip("-") or "default"


def config_digest(config: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:6]


def lock_run(run_dir: Path) -> None:
    """Hold ``run_dir``'s lock for this process, or raise UserError naming the run that holds it.

    The lock is an ``flock`` on the run folder itself, so deleting or replacing ``.lock`` (which
    only says who holds it) cannot let a second writer in. Taking a lock this process holds
    already is a no-op. A filesystem without locks (some NFS) gets a warning and no lock rather
    than no runs at all.
    """
    key = Path(run_dir).resolve()
    if key in _LOCKS:
        return
    holder = _open_holder_file(key / LOCK_NAME)
    try:
        fd = os.open(key, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        os.close(holder)
        raise storage_error(e, key, "open") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        who = _lock_holder(holder)
        os.close(fd)
        os.close(holder)
        raise UserError(
            f"{run_dir} is in use by a run still running ({who}); wait for it to end or stop "
            "it, then resume"
        ) from None
    except OSError as e:
        os.close(fd)
        os.close(holder)
        progress.line(
            f"warning: cannot lock {key} ({e.strerror}); two writers are not kept apart",
        )
        return
    _LOCKS[key] = (fd, holder)
    with contextlib.suppress(OSError):  # who holds it, for the message above; a full disk is fine
        os.ftruncate(holder, 0)
        os.pwrite(
            holder, f"pid {os.getpid()} on {platform.node()} since {time.ctime()}\n".encode(), 0
        )


def _open_holder_file(path: Path) -> int:
    """``.lock``, which names the holder; never through a symlink (a planted one must not
    truncate someone's file), and only a regular file."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        raise storage_error(e, path) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError(f"{path} is not a regular file; remove it, then run again")
    return fd


def _lock_holder(fd: int) -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return one_line(os.pread(fd, 200, 0).decode()) or "pid unknown"
    return "pid unknown"


def unlock_run(run_dir: Path) -> None:
    """Let go of ``run_dir``'s lock (the end of the process does it too)."""
    key = Path(run_dir).resolve()
    fds = _LOCKS.pop(key, None)
    if fds is not None:
        with contextlib.suppress(OSError):
            os.ftruncate(fds[1], 0)  # nobody holds it now (through the descriptor: never a link)
        for fd in fds:
            os.close(fd)


def release_locks() -> None:
    """Let go of every run lock this process holds."""
    for key in list(_LOCKS):
        unlock_run(key)


def read_record_json(path: Path) -> dict[str, Any]:
    """A JSON object from a run record file, or a one-line error saying what is wrong with it."""
    restore = "; restore it, or start a new run"
    try:
        text = read_small_text(path, MAX_RECORD_BYTES, "run record", ConfigError)
    except ConfigError as e:
        raise ConfigError(f"{e}{restore}") from None
    why = ""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        why = f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"
    except (RecursionError, ValueError) as e:
        why = f"is not a run record ({one_line(e)[:80] or 'nested too deeply'})"
    if not why and not isinstance(obj, dict):
        why = f"holds a JSON {type(obj).__name__}, not an object"
    if why:
        raise ConfigError(f"{path} {why}{restore}")
    return obj


# ----- reading records: strictly to resume one, tolerantly to compare, sweep and plot many -------------
def _read_record(path: Path, limit: int, problems: list[str] | None) -> bytes | None:
    """Up to ``limit + 1`` bytes of a record file, or None when it is missing or unreadable.

    Opened without blocking and read only when it is a regular file: a FIFO planted in a run
    folder would otherwise hang the reader for ever. Anything there that cannot be read is noted
    in ``problems`` (a missing file is not: a run that is starting has none yet).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        if problems is not None:
            problems.append(f"{path.name}: {e.strerror or e}")
        return None
    with open(fd, "rb") as f:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                if problems is not None:
                    problems.append(f"{path.name} is not a regular file (a folder, device or pipe)")
                return None
            return f.read(limit + 1)
        except OSError as e:
            if problems is not None:
                problems.append(f"{path.name}: {e.strerror or e}")
            return None


def read_json(path: Path, problems: list[str] | None = None) -> dict[str, Any]:
    """A JSON object, or {} when the file is missing or unreadable (a record being written)."""
    raw = _read_record(Path(path), MAX_JSON_BYTES, problems)
    if raw is None or len(raw) > MAX_JSON_BYTES:
        return {}
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def read_history(path: Path, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """metrics.jsonl, skipping a torn last line of a run that was killed mid-write."""
    raw = _read_record(Path(path), MAX_HISTORY_BYTES, problems)
    if raw is None:
        return []
    if len(raw) > MAX_HISTORY_BYTES:  # keep the first epochs, drop the torn line at the cut
        raw = raw[: raw.rfind(b"\n", 0, MAX_HISTORY_BYTES) + 1]
    lines = raw.decode("utf-8", errors="replace").splitlines()
    history = []
    for line in lines:
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(entry, dict):
            history.append(entry)
    return history


def best_epoch(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The epoch whose weights a run keeps and tests: the last one that improved (``best``), or
    the last epoch when none did (a loss that was never finite keeps the final weights). The one
    rule the runner's summary, compare_runs and the sweeps' leaderboard all use."""
    kept = [m for m in history if m.get("best")]
    return kept[-1] if kept else history[-1]


class RunRecord:
    """The folder of one run and the files in it."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.config_path = run_dir / "config.json"
        self.metrics_path = run_dir / "metrics.jsonl"
        self.summary_path = run_dir / "summary.json"
        self.weights_path = run_dir / "weights.pt"
        self.summary: dict[str, Any] = {}
        # wall_time is the total over the parts of a resumed run: the earlier parts' seconds
        # (from summary.json) plus this part's, counted from part_started.
        self.wall_time_before = 0.0
        self.part_started = time.time()

    @classmethod
    def create(cls, config: dict[str, Any], root: Path | None = None) -> RunRecord:
        """Make a fresh, uniquely named run folder under runs/<group>/ and lock it."""
        root = root or paths.runs_dir()
        group_dir = root / slug(config.get("experiment_group") or "default")
        base = config.get("run_name") or (
            f"{time.strftime('%Y%m%d-%H%M%S')}_{slug(config['dataset'])}_{config['network']}_"
            f"{config_digest(config)}"
        )
        base = slug(base) if config.get("run_name") else base
        for i in range(1, 10000):
            run_dir = group_dir / (base if i == 1 else f"{base}-{i}")
            try:
                run_dir.mkdir(parents=True, exist_ok=False)
            except FileExistsError:
                continue
            except OSError as e:
                raise storage_error(e, e.filename or run_dir, "create the run folder") from None
            lock_run(run_dir)
            return cls(run_dir)
        raise UserError(f"could not create a run folder under {group_dir}: 9999 runs named {base}")

    @classmethod
    def reopen(cls, run_dir: Path) -> RunRecord:
        """An existing run folder, locked, cleared of dead writers' temp files, summary loaded."""
        record = cls(Path(run_dir))
        lock_run(record.dir)
        clean_stale_temps(record.dir)
        record.summary = read_record_json(record.summary_path)
        return record

    def discard(self) -> None:
        """Remove a run folder this process created that never started (only our own files)."""
        unlock_run(self.dir)
        for name in (self.config_path.name, self.summary_path.name, LOCK_NAME, RESERVE_NAME):
            with contextlib.suppress(OSError):
                (self.dir / name).unlink()
        clean_stale_temps(self.dir)
        with contextlib.suppress(OSError):
            self.dir.rmdir()

    def reserve_space(self) -> None:
        """Set aside a little space, handed back by `release_space` when the disk fills up."""
        self.release_space()  # a killed run's reserve: its space serves this one
        write_text_atomic(self.dir / RESERVE_NAME, "\0" * RESERVE_BYTES)

    def release_space(self) -> None:
        with contextlib.suppress(OSError):
            (self.dir / RESERVE_NAME).unlink()

    def close(self) -> None:
        """The run is over: give back the reserve and the lock."""
        self.release_space()
        unlock_run(self.dir)

    def write_config(self, config: dict[str, Any]) -> None:
        write_json_atomic(self.config_path, config)

    def rewind_metrics(self, history: list[dict[str, Any]]) -> None:
        """Keep only the epochs a resumed run continues from, so none is logged twice."""
        write_text_atomic(self.metrics_path, "".join(json.dumps(m) + "\n" for m in history))

    def log_epoch(self, metrics: dict[str, Any]) -> None:
        append_jsonl(self.metrics_path, metrics)

    def wall_time(self) -> float:
        """Seconds this run has run so far, over all its parts."""
        return self.wall_time_before + max(0.0, time.time() - self.part_started)

    def remove_checkpoints(self) -> None:
        """Drop the resume checkpoints of a finished run (each about twice its weights); one
        that cannot be removed is a warning, never a failure of the finished run."""
        for name in reversed(CHECKPOINT_NAMES):  # the older first: a kill between the two
            try:  # leaves the last, finished, checkpoint, never an older one to resume from
                (self.dir / name).unlink()
            except FileNotFoundError:
                pass
            except OSError as e:
                progress.line(f"warning: cannot remove {self.dir / name} ({e.strerror or e})")

    def update_summary(self, **fields: Any) -> dict[str, Any]:
        self.summary.update(fields)
        write_json_atomic(self.summary_path, self.summary)
        return self.summary

    def try_update_summary(self, **fields: Any) -> bool:
        """Update summary.json where the disk still allows; False (and quiet) where it does not."""
        try:
            self.update_summary(**fields)
        except OSError:
            return False
        return True

    @staticmethod
    def read(run_dir: Path) -> dict[str, Any]:
        """A run's config, summary and metrics as one dict (for comparisons and tests)."""
        run_dir = Path(run_dir)
        out: dict[str, Any] = {"dir": str(run_dir)}
        for name in ("config", "summary"):
            p = run_dir / f"{name}.json"
            out[name] = read_json(p) if p.exists() else None
        out["metrics"] = read_history(run_dir / "metrics.jsonl")
        return out
