"""A trial's process and its log: started as the agent would, tied to the sweep, and read back.

Kept apart from the scheduler because this is the operating-system side of a trial (environment,
process group, parent-death signal, /proc, the log file) while the scheduler decides when and which.
Each trial is its own session, so a Ctrl-C reaches only local_sweep, which stops trials in order;
on Linux a trial still gets SIGTERM if local_sweep dies by kill -9, so none is ever orphaned.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

from text_recognizer.errors import storage_error
from text_recognizer.orchestration.sweep_yaml import PROGRAM

# W&B variables that would make a trial's wandb.init join a server sweep; local trials are their own.
AGENT_ENV = ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH")


def trial_env(state_dir: Path) -> dict[str, str]:
    """This environment without the agent's variables, the trial's runs root the state folder's
    parent (its record lands in the state folder, named by its group), output unbuffered."""
    env = {k: v for k, v in os.environ.items() if k not in AGENT_ENV}
    env["TEXT_RECOGNIZER_RUNS_DIR"] = str(state_dir.parent.resolve())
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _open_log(path: Path) -> IO[str]:
    """A trial's log, appended to; a symlink planted in logs/ is refused, not followed."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        raise storage_error(e, path) from None
    return os.fdopen(fd, "a", encoding="utf-8")


def open_trial_log(path: Path, header: str) -> IO[str]:
    """The trial's log, opened for appending with ``header`` written; StorageError if full."""
    log = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        log = _open_log(path)
        log.write(header + "\n")
        log.flush()
    except OSError as e:
        if log is not None:
            with contextlib.suppress(OSError):
                log.close()
        raise storage_error(e, path) from None
    return log


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the trial gets SIGTERM if local_sweep dies (even by kill -9), so none is orphaned."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def spawn_trial(command: list[str], env: dict[str, str], log: IO[str]) -> subprocess.Popen:
    """Start the trial, its output (both streams) into its log, no input, in its own session."""
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # a Ctrl-C reaches local_sweep, which stops trials in order
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
    )


def trial_process_alive(pid: int, trial_id: str) -> bool:
    """Whether ``pid`` is still the run_sweep.py process of this trial (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    text = [c.decode(errors="replace") for c in cmdline]
    return any(c.endswith(PROGRAM) for c in text) and f"--run_name={trial_id}" in text


def last_error(log_path: Path) -> str | None:
    """The error line of the log's last attempt (``error: ...``), else its last line, if any."""
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    attempt = [ln for ln in lines[::-1] if ln.strip()]
    for line in attempt:
        if line.startswith("=== attempt"):
            break
        if line.startswith(("error:", "run failed:")):
            return line
    return attempt[0].strip()[:300] if attempt else None
