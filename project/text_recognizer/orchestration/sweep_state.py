"""A local sweep's state on disk: state.json (its trials), the state folder, and its lock.

Everything a resume relies on lives here, so what may be trusted about a state folder is decided in
one place: state.json is written atomically and checked field by field on load (a trial id becomes
a folder that a rerun replaces, so it must be a plain ``trial-NNNN``); a state folder is new, empty
or a sweep's; its name is a plain name (it is the trials' experiment group); one sweep holds it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from text_recognizer.errors import SweepError, UserError, one_line, storage_error
from text_recognizer.fileio import read_small_text

TERMINAL = ("finished", "failed", "stopped")
STATUSES = ("pending", "running", *TERMINAL, "interrupted")
TRIAL_ID = re.compile(r"trial-[0-9]{4,9}")
# What a state folder holds before its first state.json: the lock, a killed first write's temp.
_BEFORE_STATE = re.compile(r"\.lock|\.state\.json\..+\.tmp")
STATE_VERSION = 1
MAX_STATE_BYTES = 64 << 20


def timestamp() -> str:
    """Local time with its offset, as state.json records every start, end and update."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass
class Trial:
    """One trial of the sweep, as state.json keeps it."""

    id: str
    params: dict[str, Any]
    status: str = "pending"  # pending, running, finished, failed, stopped, interrupted
    attempts: int = 0
    pid: int | None = None
    exit_code: int | None = None
    metric: float | None = None
    error: str | None = None
    stop_requested: bool = False
    started_at: str | None = None
    ended_at: str | None = None
    wall_time: float | None = None


@dataclass
class SweepState:
    """The sweep (its YAML as parsed) and its trials; rewritten atomically after every change."""

    name: str
    source: str
    sweep: dict[str, Any]
    count: int | None = None
    trials: list[Trial] = field(default_factory=list)
    sessions: int = 0
    created_at: str = field(default_factory=timestamp)
    updated_at: str = field(default_factory=timestamp)
    version: int = STATE_VERSION

    def save(self, path: Path) -> None:
        """Atomically: a kill at any moment leaves the previous or the new state, never half."""
        from text_recognizer.fileio import write_json_atomic

        self.updated_at = timestamp()
        try:
            write_json_atomic(path, asdict(self))
        except OSError as e:
            raise storage_error(e, path) from None

    @classmethod
    def load(cls, path: Path) -> SweepState:
        """Read and check state.json (unknown keys from a newer version are ignored).

        A file that is not a sweep state (truncated, edited, a trial without parameters) is a
        one-line error naming it and how to recover; it is never half-used.
        """
        recover = (
            f"move the folder {path.parent} away (or pass another --state) to start the sweep over"
        )
        try:  # without blocking (a FIFO would hang the read), bounded
            data = json.loads(read_small_text(path, MAX_STATE_BYTES, "sweep state", ValueError))
            return cls._from_dict(data)
        except RecursionError:
            raise SweepError(f"sweep state {path} is nested too deeply; {recover}") from None
        except (OSError, UserError, ValueError, KeyError, TypeError) as e:
            detail = one_line(f"{type(e).__name__}: {e}")[:200]
            raise SweepError(f"sweep state {path} is unreadable ({detail}); {recover}") from None

    @classmethod
    def _from_dict(cls, data: Any) -> SweepState:
        """Build the state from parsed JSON, checking every field a resume relies on."""
        if not isinstance(data, dict):
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        for key, kind in _STATE_TYPES.items():
            if key in data and not isinstance(data[key], kind):
                raise TypeError(f"{key!r} is {data[key]!r}")
        if not isinstance(data.get("trials"), list) or not isinstance(data.get("sweep"), dict):
            raise KeyError("'trials' (a list) and 'sweep' (a mapping) are required")
        names = {f.name for f in fields(Trial)}
        trials, seen = [], set()
        for i, t in enumerate(data["trials"]):
            trial = _check_trial(t, i, names)
            if trial.id in seen:
                raise ValueError(f"trials[{i}]: {trial.id} appears twice")
            seen.add(trial.id)
            trials.append(trial)
        top = {f.name for f in fields(cls)} - {"trials"}
        return cls(trials=trials, **{k: v for k, v in data.items() if k in top})


_STATE_TYPES: dict[str, Any] = {
    "name": str,
    "source": str,
    "count": (int, type(None)),
    "sessions": int,
    "created_at": str,
    "updated_at": str,
    "version": int,
}
_TRIAL_TYPES: dict[str, Any] = {
    "params": dict,
    "status": str,
    "attempts": int,
    "pid": (int, type(None)),
    "exit_code": (int, type(None)),
    "metric": (int, float, type(None)),
    "error": (str, type(None)),
    "stop_requested": bool,
    "started_at": (str, type(None)),
    "ended_at": (str, type(None)),
    "wall_time": (int, float, type(None)),
}


def _check_trial(t: Any, i: int, names: set[str]) -> Trial:
    """One trial of state.json, type-checked; its id must be a plain trial-NNNN name (it becomes
    a folder that a rerun replaces, so it must never point elsewhere)."""
    if not isinstance(t, dict) or not isinstance(t.get("id"), str):
        raise TypeError(f"trials[{i}] is not a trial with an id")
    if not TRIAL_ID.fullmatch(t["id"]):
        raise ValueError(f"trials[{i}]: id {t['id'][:40]!r} is not a name like trial-0001")
    for key, kind in _TRIAL_TYPES.items():
        value = t.get(key, ...)
        if key == "params" and value is ...:
            raise KeyError(f"trials[{i}] ({t['id']}) has no params")
        plain = key == "stop_requested" or not isinstance(value, bool)
        if value is not ... and not (isinstance(value, kind) and plain):
            raise TypeError(f"trials[{i}] ({t['id']}): {key} is {value!r}")
    return Trial(**{k: v for k, v in t.items() if k in names})


def _normalized(obj: Any) -> Any:
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def load_or_create_state(
    state_dir: Path, sweep: dict[str, Any], source: str, count: int | None
) -> SweepState:
    """The folder's state.json when it holds one (of this very sweep), else a new state.

    ``count`` given on the command line replaces the recorded one (a sweep may be extended);
    random and bayes search need one (or the YAML's ``run_cap``), as they never run out of trials.
    """
    path = state_dir / "state.json"
    if path.exists():
        state = SweepState.load(path)
        if _normalized(state.sweep) != _normalized(sweep):
            raise SweepError(
                f"{state_dir} holds a different sweep (from {state.source}); pass another "
                "--state, or move that folder away to start over"
            )
        if count is not None:
            state.count = count
    else:
        name = str(sweep.get("name") or Path(source).stem)
        state = SweepState(name=name, source=source, sweep=sweep, count=count)
    if state.count is None and sweep.get("run_cap") is None and sweep["method"] != "grid":
        raise SweepError(
            f"{sweep['method']} search never runs out of trials: give --count N (or `run_cap: N` "
            "in the YAML)"
        )
    return state


# ---------------------------------------------------------------------------------------------
# The state folder: its name, its contents, its lock


def default_state_dir(sweep: dict[str, Any], source: str | Path) -> Path:
    """runs/sweeps/<the YAML's name, or its file name>."""
    from text_recognizer import paths
    from text_recognizer.run.records import slug

    return paths.runs_dir() / "sweeps" / slug(str(sweep.get("name") or Path(source).stem))


def is_plain_name(name: str) -> bool:
    """Lowercase letters, digits and ._+=-, starting with a letter or digit (a folder, a group)."""
    from text_recognizer.run.records import slug

    return slug(name) == name and re.match(r"^[a-z0-9]", name) is not None


def plain_name(text: str) -> str:
    """A plain name made from ``text`` ("../tmp/My Sweep" -> "tmp-my-sweep"), for a suggestion."""
    from text_recognizer.run.records import slug

    name = re.sub(r"[._+=-]*-[._+=-]*", "-", slug(text))
    name = re.sub(r"^[^a-z0-9]+", "", name)
    return name if name and is_plain_name(name) else "sweep"


def check_state_dir(state_dir: Path) -> str:
    """The state folder's name is the trials' experiment group, so it must be a plain name."""
    name = Path(state_dir).name
    if not is_plain_name(name):
        raise SweepError(
            f"--state folder name {name!r} must be a plain name such as {plain_name(name)!r} "
            "(lowercase letters, digits, ._+=-, starting with a letter or digit): the trials use "
            "it as their experiment group"
        )
    return name


def check_sweep_name(sweep: dict[str, Any], source: str | Path) -> None:
    """Without --state, the YAML's ``name`` (or its file name) names the state folder and group."""
    from text_recognizer.run.records import slug

    name = sweep.get("name")
    folder = slug(str(name or Path(source).stem))
    if is_plain_name(folder):
        return
    if name:
        what = f"the sweep's name {str(name)!r} (`name` in {source})"
        fix = f"set `name: {plain_name(str(name))}` in it"
    else:
        what = f"the sweep file's name {Path(source).stem!r} (used as the sweep's name)"
        fix = f"add `name: {plain_name(Path(source).stem)}` to it"
    raise SweepError(
        f"{what} is not a plain name (lowercase letters, digits, ._+=-, starting with a letter or "
        "digit), and it names the state folder runs/sweeps/<name> and the trials' experiment "
        f"group: {fix}, or pass --state DIR"
    )


def check_state_folder(state_dir: Path, option: str = "state folder") -> None:
    """A state folder is new, empty, or a sweep's (it holds state.json); any other is refused.

    local_sweep writes state.json, logs/ and curves.png into it and replaces the trial folders it
    reruns, so a folder of the user's own files must never be taken for one.
    """
    try:
        names = sorted(os.listdir(state_dir))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        raise SweepError(f"{option} {state_dir} is a file, not a folder") from None
    except OSError:
        return  # unreadable: making or locking it says why, in one line
    if "state.json" in names:
        return
    foreign = [n for n in names if not _BEFORE_STATE.fullmatch(n)]
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:3])
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise SweepError(
            f"{option} {state_dir} is not empty ({shown}{more}) and holds no state.json of a "
            "sweep, so it is not a sweep's folder: local_sweep.py writes its trials there; pass a "
            "new or empty folder"
        )


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """One local_sweep per state folder: a second one is refused instead of double-running trials."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise SweepError(
                f"another local_sweep.py (pid {holder}) is running the sweep in {state_dir}; "
                "wait for it or pass another --state"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
