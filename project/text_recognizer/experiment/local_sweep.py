"""Run a W&B sweep YAML offline: W&B's open-source ``sweeps`` engine proposes, trials run here.

    python training/local_sweep.py training/sweep_mnist.yaml --jobs 2 [--count N] [--state DIR]

The YAML is the one ``wandb sweep`` takes. Each trial runs the YAML's command the way ``wandb agent``
does (``${env} ${interpreter} ${program} ${args}``, program training/run_sweep.py), as a subprocess
with ``--gpu=-1`` (a GPU leased through the GPUManager, else the CPU), J at a time. Its result comes
back from its run record (summary.json, metrics.jsonl) to the engine as a ``sweeps.SweepRun``;
hyperband early termination reads the per-epoch metrics of running trials and stops the laggards
with SIGTERM (the run records itself as interrupted; the sweep calls the trial ``stopped``).

The state folder (default runs/sweeps/<name>/) holds everything, so a sweep resumes where it stopped:
    state.json            the sweep and every trial: parameters, status, attempts, metric (atomic)
    trial-0001/ ...       each trial's run record (trials run with the folder's name as their group)
    logs/trial-0001.log   each trial's output, every attempt appended
    curves.png            training curves, written at the end
Running the same command again resumes: finished, failed and stopped trials are kept and never rerun;
trials that were running (or pending) when the sweep was interrupted are rerun from the start.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any

from text_recognizer.errors import (
    StorageError,
    SweepError,
    UserError,
    one_line,
    print_error,
    storage_error,
)
from text_recognizer.experiment.sweep import format_arg, resolve_path
from text_recognizer.fileio import clean_stale_temps, read_small_text

SUPPORTED_METHODS = ("grid", "random", "bayes")
PROGRAM = "run_sweep.py"
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
TERMINAL = ("finished", "failed", "stopped")
# W&B variables that would make a trial's wandb.init join a server sweep; local trials are their own.
AGENT_ENV = ("WANDB_SWEEP_ID", "WANDB_RUN_ID", "WANDB_SWEEP_PARAM_PATH")
MAX_GRID_CHECK = 10000
MAX_GRID = 100_000  # the engine lists every grid point for every proposal
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 100_000
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"
TRIAL_ID = re.compile(r"trial-[0-9]{4,9}")
# What a state folder holds before its first state.json: the lock, a killed first write's temp.
_BEFORE_STATE = re.compile(r"\.lock|\.state\.json\..+\.tmp")
STATUSES = ("pending", "running", *TERMINAL, "interrupted")
STATE_VERSION = 1
MAX_STATE_BYTES = 64 << 20
MAX_JOBS = 1024


def import_sweeps() -> Any:
    """W&B's sweeps engine, imported quietly (it warns about pydantic v2 config names)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import sweeps
        import sweeps.params
    return sweeps


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays from the engine -> plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# The sweep YAML


def load_sweep(path: str | Path) -> dict[str, Any]:
    """Read a sweep YAML into a dict, or raise SweepError with one clear line.

    The file is untrusted text: its size, nesting depth and alias expansion ("billion laughs") are
    bounded before anything walks the parsed value, and mapping keys must be text.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SweepError(f"sweep file {str(path)!r} does not exist")
    text = read_small_text(p, MAX_YAML_BYTES, "sweep file", SweepError)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_yaml_node(node, path)
        data = yaml.safe_load(text)
    except RecursionError:
        raise SweepError(f"{path}: nested too deeply (at most {MAX_YAML_DEPTH} levels)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SweepError(one_line(f"{path}: malformed YAML: {problem}{where}")) from None
    if not isinstance(data, dict):
        raise SweepError(
            f"{path} must hold a YAML mapping (program, method, metric, parameters), "
            f"got {type(data).__name__}"
        )
    return data


def _check_yaml_node(root: Any, path: str | Path) -> None:
    """Bound depth and expanded size (aliases count each time they are used); keys must be text."""
    import yaml

    sizes: dict[int, int] = {}

    def size(node: Any, depth: int) -> int:
        if depth > MAX_YAML_DEPTH:
            raise SweepError(f"{path}: nested too deeply (at most {MAX_YAML_DEPTH} levels)")
        if id(node) in sizes:
            return sizes[id(node)]
        total = 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag not in (_STR_TAG, _MERGE_TAG):
                    where = f"line {key.start_mark.line + 1}"
                    raise SweepError(f"{path}: a mapping key at {where} is not text")
                total += size(value, depth + 1) + 1
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item, depth + 1) for item in node.value)
        if total > MAX_YAML_NODES:
            raise SweepError(
                f"{path}: expands to more than {MAX_YAML_NODES} values (YAML aliases included)"
            )
        sizes[id(node)] = total
        return total

    if root is not None:
        size(root, 0)


def check_sweep(sweep: dict[str, Any], source: str = "sweep") -> None:
    """Everything W&B would reject, plus what a local sweep needs: raise SweepError, else None."""
    sweeps = import_sweeps()
    method = sweep.get("method")
    if method is None:
        raise SweepError(f"{source}: no `method` (one of {', '.join(SUPPORTED_METHODS)})")
    if method not in SUPPORTED_METHODS:
        raise SweepError(
            f"{source}: unknown method {method!r}; a local sweep runs "
            f"{', '.join(SUPPORTED_METHODS)}"
        )
    params = sweep.get("parameters")
    if not isinstance(params, dict) or not params:
        raise SweepError(
            f"{source}: `parameters` must map parameter names to specs, got {params!r}"
        )
    for name, spec in params.items():
        if not isinstance(spec, dict):
            raise SweepError(
                f"{source}: parameter {name!r} must be a mapping such as {{values: [...]}}, "
                f"{{value: ...}} or {{min: ..., max: ...}}, got {spec!r}"
            )
    _check_finite(params, source)
    violations = list(dict.fromkeys(sweeps.schema_violations_from_proposed_config(sweep)))
    if violations:
        raise SweepError(f"{source}: W&B would reject this sweep: {'; '.join(violations)}")
    check_program(sweep, source)
    metric = sweep.get("metric")
    if (method == "bayes" or "early_terminate" in sweep) and not metric:
        why = "bayes search" if method == "bayes" else "early_terminate"
        raise SweepError(f"{source}: {why} needs a `metric` ({{name: val_loss, goal: minimize}})")
    if metric is not None and not (isinstance(metric, dict) and metric.get("name")):
        raise SweepError(
            f"{source}: `metric` needs a name, e.g. {{name: val_loss, goal: minimize}}"
        )
    if "early_terminate" in sweep:
        try:
            sweeps.stop_runs(sweep, [])
        except (ValueError, KeyError, TypeError) as e:
            raise SweepError(f"{source}: bad early_terminate: {e}") from None
    if method == "grid":
        size = grid_size(sweep)
        if size > MAX_GRID:
            raise SweepError(
                f"{source}: the grid has {size:.3g} points, more than the {MAX_GRID} a sweep can "
                "list; use fewer values, or method random/bayes with --count"
            )
        try:
            sweeps.next_runs(sweep, [], n=1)
        except ValueError as e:
            raise SweepError(one_line(f"{source}: {e}")) from None


def _check_finite(params: dict[str, Any], source: str, prefix: str = "") -> None:
    """Refuse an inf or nan in a range or value, before the engine hands it to scipy (which warns
    over several lines) or to a trial, which would get the text 'inf' (the agent formats values
    with str()) and refuse it as a string."""
    for name, spec in params.items():
        if not isinstance(spec, dict):
            continue
        if isinstance(spec.get("parameters"), dict):  # W&B's nested form
            _check_finite(spec["parameters"], source, f"{prefix}{name}.")
        for key, value in spec.items():
            items = value if key == "values" and isinstance(value, list) else [value]
            bad = [v for v in items if isinstance(v, float) and not math.isfinite(v)]
            if bad:
                one = f"{key} must be a finite number"
                what = "values must be finite numbers" if key == "values" else one
                raise SweepError(f"{source}: parameter {prefix + name!r}: {what}, got {bad[0]}")


def program_path() -> Path:
    """The one program a sweep may run: the project's training/run_sweep.py."""
    from text_recognizer.paths import PROJECT_ROOT

    return (PROJECT_ROOT / "training" / PROGRAM).resolve()


def check_program(sweep: dict[str, Any], source: str = "sweep") -> None:
    """A sweep runs exactly ``${env} ${interpreter} ${program} ${args}`` with the project's
    training/run_sweep.py: anything else would let a YAML run any program (the agent runs it)."""
    program = sweep.get("program")
    if not program or not isinstance(program, str):
        raise SweepError(f"{source}: no `program`; sweeps run `program: training/{PROGRAM}`")
    try:
        same = resolve_path(program).resolve() == program_path()
    except (OSError, RuntimeError, ValueError):
        same = False
    if not same:
        raise SweepError(
            f"{source}: program {program!r} is not training/{PROGRAM} of this project "
            f"({program_path()}), the only program a sweep runs"
        )
    command = sweep.get("command", DEFAULT_COMMAND)
    if command != DEFAULT_COMMAND:
        raise SweepError(
            one_line(
                f"{source}: command {str(command)[:200]} is refused: a sweep's command is exactly "
                f"[{', '.join(DEFAULT_COMMAND)}] (or left out)"
            )
        )


def _hyperparameters(sweep: dict[str, Any]) -> list[Any]:
    sweeps = import_sweeps()
    return list(sweeps.params.HyperParameterSet.from_config(sweep["parameters"]))


def _agent_values(params: Any) -> dict[str, Any]:
    """The parameter values the agent would pass: top-level names, nested ones re-nested."""
    return {k: _plain(v["value"]) for k, v in params.to_config().items()}


def grid_size(sweep: dict[str, Any]) -> int:
    """How many points a grid sweep has (what the engine will propose before it runs out)."""
    sweeps = import_sweeps()
    hp = sweeps.params.HyperParameter
    size = 1
    for p in _hyperparameters(sweep):
        if p.type == hp.CATEGORICAL:
            size *= len(p.config["values"])
        elif p.type == hp.INT_UNIFORM:
            size *= p.config["max"] - p.config["min"] + 1
        elif p.type == hp.Q_UNIFORM:  # len(np.arange(min, max, q)) without building it
            size *= max(0, math.ceil((p.config["max"] - p.config["min"]) / p.config["q"]))
    return size


def _representatives(p: Any) -> list[Any]:
    hp = type(p)
    if p.type == hp.CATEGORICAL:
        return list(p.config["values"])
    if p.type == hp.CONSTANT:
        return [p.config["value"]]
    if p.type == hp.INT_UNIFORM:
        return [p.config["min"], p.config["max"]]
    return [_plain(p.ppf(q)) for q in (0.001, 0.5, 0.999)]


def parameter_points(sweep: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The points to validate: the whole grid when it is small enough, else every value (or the
    ends and middle of every distribution) of each parameter, the others at their first value."""
    sweeps = import_sweeps()
    if sweep["method"] == "grid" and grid_size(sweep) <= MAX_GRID_CHECK:
        for run in sweeps.next_runs(sweep, [], n=MAX_GRID_CHECK + 1):
            if run is None:
                return
            yield {k: _plain(v["value"]) for k, v in run.config.items()}
        return
    params = sweeps.params.HyperParameterSet(_hyperparameters(sweep))
    reps = [_representatives(p) for p in params]
    for p, values in zip(params, reps, strict=True):
        p.value = values[0]
    yield _agent_values(params)
    for p, values in zip(params, reps, strict=True):
        first = p.value
        for value in values[1:]:
            p.value = value
            yield _agent_values(params)
        p.value = first


def describe_params(params: dict[str, Any]) -> str:
    """Parameters as the trial's arguments: ``--network_args.layer_size=256 ...``."""
    return " ".join(format_arg(k, v) for k, v in params.items())


def check_parameter_space(sweep: dict[str, Any], source: str = "sweep") -> int:
    """Validate the experiment config of every grid point (or of the edges of the space) up front.

    Returns how many points were checked. Raises SweepError naming the first bad point.
    """
    from text_recognizer.config import validate_config
    from text_recognizer.experiment.sweep import parse_trial_args, trial_config

    checked = 0
    seen: set[str] = set()
    for params in parameter_points(sweep):
        key = json.dumps(params, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        argv = [format_arg(k, v) for k, v in params.items()]
        try:
            validate_config(trial_config(parse_trial_args(argv), env={}))
        except UserError as e:
            raise SweepError(f"{source}: trial {describe_params(params)} is invalid: {e}") from None
        checked += 1
    return checked


def trial_command(
    sweep: dict[str, Any], params: dict[str, Any], extra: list[str] | None = None
) -> list[str]:
    """The trial's command line, built from the YAML's command as ``wandb agent`` builds it.

    ``${interpreter}`` is this Python (the agent says ``python``, found on PATH); ``extra`` (group,
    run name, --gpu) goes after the parameters, and run_sweep.py lets the last value win.
    """
    args = [format_arg(k, v) for k, v in params.items()] + list(extra or [])
    command: list[str] = []
    check_program(sweep)
    for chunk in DEFAULT_COMMAND:
        if chunk == "${env}":
            command += ["/usr/bin/env"] if os.path.exists("/usr/bin/env") else []
        elif chunk == "${interpreter}":
            command.append(sys.executable)
        elif chunk == "${program}":
            command.append(str(program_path()))
        elif chunk == "${args}":
            command += args
    return command


# ---------------------------------------------------------------------------------------------
# State on disk


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
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    version: int = STATE_VERSION

    def save(self, path: Path) -> None:
        """Atomically: a kill at any moment leaves the previous or the new state, never half."""
        from text_recognizer.fileio import write_json_atomic

        self.updated_at = _now()
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


def default_state_dir(sweep: dict[str, Any], source: str | Path) -> Path:
    """runs/sweeps/<the YAML's name, or its file name>."""
    from text_recognizer import paths
    from text_recognizer.experiment.records import slug

    return paths.runs_dir() / "sweeps" / slug(str(sweep.get("name") or Path(source).stem))


def is_plain_name(name: str) -> bool:
    """Lowercase letters, digits and ._+=-, starting with a letter or digit (a folder, a group)."""
    from text_recognizer.experiment.records import slug

    return slug(name) == name and re.match(r"^[a-z0-9]", name) is not None


def plain_name(text: str) -> str:
    """A plain name made from ``text`` ("../tmp/My Sweep" -> "tmp-my-sweep"), for a suggestion."""
    from text_recognizer.experiment.records import slug

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
    from text_recognizer.experiment.records import slug

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


def _open_log(path: Path) -> IO[str]:
    """A trial's log, appended to; a symlink planted in logs/ is refused, not followed."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        raise storage_error(e, path) from None
    return os.fdopen(fd, "a", encoding="utf-8")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the trial gets SIGTERM if local_sweep dies (even by kill -9), so none is orphaned."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _trial_process_alive(pid: int, trial_id: str) -> bool:
    """Whether ``pid`` is still the run_sweep.py process of this trial (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    text = [c.decode(errors="replace") for c in cmdline]
    return any(c.endswith(PROGRAM) for c in text) and f"--run_name={trial_id}" in text


# ---------------------------------------------------------------------------------------------
# The runner


@dataclass
class _Active:
    trial: Trial
    proc: subprocess.Popen
    log: IO[str]
    started: float
    epochs: int | None = None


class LocalSweep:
    """Runs the trials of one sweep, J at a time, keeping state.json current."""

    poll_s = 0.25
    term_grace_s = 60.0

    def __init__(
        self,
        sweep: dict[str, Any],
        source: str,
        state_dir: Path,
        jobs: int = 1,
        count: int | None = None,
        gpu: int | None = -1,
        nowandb: bool = False,
        out: IO[str] | None = None,
        custom_state: bool = False,
    ) -> None:
        self.sweep = sweep
        self.source = source
        self.state_dir = Path(state_dir)
        self.group = check_state_dir(self.state_dir)
        check_state_folder(self.state_dir, "--state folder" if custom_state else "state folder")
        self.jobs = jobs
        self.gpu = gpu
        self.nowandb = nowandb
        self.out = out or sys.stdout
        self.custom_state = custom_state  # the resume hint then names --state
        self.metric = (sweep.get("metric") or {}).get("name")
        self.maximize = (sweep.get("metric") or {}).get("goal") == "maximize"
        self.state_path = self.state_dir / "state.json"
        self.logs_dir = self.state_dir / "logs"
        self.active: dict[str, _Active] = {}
        self.stopping: int | None = None  # the signal that asked us to stop
        self.force = False
        self.abort: str | None = None  # a trial hit bad input: launch no more
        self.exhausted = False
        # A local_sweep killed while writing state.json or curves.png left its temp file there.
        clean_stale_temps(self.state_dir)
        self.state = self._load_or_create_state(count)
        self.total = self._total()
        self._histories: dict[str, list[dict[str, Any]]] = {}
        self._warned_metric = False

    # -- state ------------------------------------------------------------------------------

    def _load_or_create_state(self, count: int | None) -> SweepState:
        name = str(self.sweep.get("name") or Path(self.source).stem)
        if self.state_path.exists():
            state = SweepState.load(self.state_path)
            if _normalized(state.sweep) != _normalized(self.sweep):
                raise SweepError(
                    f"{self.state_dir} holds a different sweep (from {state.source}); pass another "
                    "--state, or move that folder away to start over"
                )
            if count is not None:
                state.count = count
        else:
            state = SweepState(name=name, source=self.source, sweep=self.sweep, count=count)
        if state.count is None and self.sweep["method"] != "grid":
            raise SweepError(
                f"{self.sweep['method']} search never runs out of trials: give --count N"
            )
        return state

    def _total(self) -> int:
        if self.sweep["method"] == "grid":
            size = grid_size(self.sweep)
            return min(size, self.state.count) if self.state.count else size
        return int(self.state.count or 0)

    def save(self) -> None:
        """Write state.json after every change, so a resume sees exactly what happened."""
        self.state.save(self.state_path)

    def say(self, text: str) -> None:
        """One progress line, flushed at once (the output is often a log file)."""
        print(text, file=self.out, flush=True)

    def _done(self) -> int:
        return sum(t.status in TERMINAL for t in self.state.trials)

    # -- engine -----------------------------------------------------------------------------

    def _history(self, trial: Trial) -> list[dict[str, Any]]:
        from text_recognizer.experiment.compare import read_history

        if trial.id in self._histories:
            return self._histories[trial.id]
        history = read_history(self.state_dir / trial.id / "metrics.jsonl")
        if trial.status in TERMINAL:
            self._histories[trial.id] = history
        return history

    def _sweep_run(self, trial: Trial) -> Any:
        sweeps = import_sweeps()
        state = {
            "finished": "finished",
            "stopped": "finished",  # stopped early, but its metric is real
            "failed": "failed",
            "running": "running",
        }.get(trial.status, "pending")
        summary = {self.metric: trial.metric} if self.metric and trial.metric is not None else {}
        return sweeps.SweepRun(
            name=trial.id,
            state=state,
            config={k: {"value": v} for k, v in trial.params.items()},
            history=self._history(trial) if state != "pending" else [],
            summary_metrics=summary,
        )

    def _propose(self) -> Trial | None:
        """A new trial from the engine, or None when the sweep has all it should run."""
        if self.exhausted or (self.state.count and len(self.state.trials) >= self.state.count):
            return None
        sweeps = import_sweeps()
        index = len(self.state.trials) + 1
        # Random and bayes draw from the global RNGs: seed them per trial so a sweep is repeatable.
        seed = zlib.crc32(f"{self.state.name}/{index}".encode())
        import random

        import numpy as np

        random.seed(seed)
        np.random.seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            run = sweeps.next_run(self.sweep, [self._sweep_run(t) for t in self.state.trials])
        if run is None:
            self.exhausted = True
            return None
        params = {k: _plain(v["value"]) for k, v in run.config.items()}
        trial = Trial(id=f"trial-{index:04d}", params=params)
        self.state.trials.append(trial)
        return trial

    # -- trials -----------------------------------------------------------------------------

    def _not_ours(self, trial_id: str) -> SweepError:
        return SweepError(
            f"{self.state_dir / trial_id} is in the way: {self.state_path} records no attempt of "
            f"{trial_id}, so it is not a record of this sweep; move it away and run the same "
            "command to resume"
        )

    def _check_trial_folders(self) -> None:
        """Refuse, before any trial starts, a trial-NNNN entry that state.json records no start of
        (it would be replaced when the engine proposes that trial)."""
        started = {t.id for t in self.state.trials if t.attempts > 0}
        try:
            names = sorted(os.listdir(self.state_dir))
        except OSError:
            return
        for name in names:
            if TRIAL_ID.fullmatch(name) and name not in started:
                raise self._not_ours(name)

    def _start(self, trial: Trial) -> None:
        run_dir = self.state_dir / trial.id
        if trial.attempts < 1 and (run_dir.exists() or run_dir.is_symlink()):
            raise self._not_ours(trial.id)  # only a folder of a recorded attempt is replaced
        if run_dir.is_symlink() or run_dir.is_file():  # never follow a link out of the folder
            run_dir.unlink()
        elif run_dir.exists():  # the partial record of an interrupted attempt
            shutil.rmtree(run_dir)
        self._histories.pop(trial.id, None)
        extra = [f"--experiment_group={self.group}", f"--run_name={trial.id}"]
        extra.append("--gpu=cpu" if self.gpu is None else f"--gpu={self.gpu}")
        if self.nowandb:
            extra.append("--nowandb")
        command = trial_command(self.sweep, trial.params, extra)
        env = {k: v for k, v in os.environ.items() if k not in AGENT_ENV}
        env["TEXT_RECOGNIZER_RUNS_DIR"] = str(self.state_dir.parent.resolve())
        env["PYTHONUNBUFFERED"] = "1"
        trial.attempts += 1
        self.save()  # recorded before the trial makes its folder, so a resume may replace it
        log = self._trial_log(trial, f"=== attempt {trial.attempts}, {_now()}: {' '.join(command)}")
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C reaches local_sweep, which stops trials in order
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        trial.status = "running"
        trial.pid = proc.pid
        trial.exit_code = trial.metric = trial.error = trial.ended_at = trial.wall_time = None
        trial.stop_requested = False
        trial.started_at = _now()
        self.active[trial.id] = _Active(trial, proc, log, time.monotonic())
        self.save()
        again = f" (attempt {trial.attempts})" if trial.attempts > 1 else ""
        self.say(
            f"[{self._done()}/{self.total}] start {trial.id}{again}: "
            f"{describe_params(self._swept(trial.params))}"
        )

    def _trial_log(self, trial: Trial, header: str) -> IO[str]:
        """The trial's log, opened for appending with ``header`` written; StorageError if full."""
        path = self.logs_dir / f"{trial.id}.log"
        log = None
        try:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            log = _open_log(path)
            log.write(header + "\n")
            log.flush()
        except OSError as e:
            if log is not None:
                with contextlib.suppress(OSError):
                    log.close()
            raise storage_error(e, path) from None
        return log

    def _trial_metric(self, trial: Trial, summary: dict[str, Any]) -> float | None:
        """The sweep metric's best value (W&B's extremum over history and summary)."""
        from text_recognizer.experiment.compare import _is_number

        if not self.metric:
            return None
        values = [h[self.metric] for h in self._history(trial) if _is_number(h.get(self.metric))]
        if _is_number(summary.get(self.metric)):
            values.append(summary[self.metric])
        if not values:
            return None
        return float(max(values) if self.maximize else min(values))

    def _finish(self, active: _Active, rc: int) -> None:
        from text_recognizer.experiment.compare import read_json

        trial = active.trial
        active.log.close()
        del self.active[trial.id]
        summary = read_json(self.state_dir / trial.id / "summary.json")
        recorded = summary.get("status")
        if rc == 0 and recorded == "finished":  # even if a stop came too late to matter
            status = "finished"
        elif trial.stop_requested:
            status = "stopped"
        elif self.stopping is not None or rc in (130, -signal.SIGTERM, -signal.SIGINT):
            status = "interrupted"
        elif rc == 2:  # bad input the up-front checks cannot see (data missing): rerun on resume
            status = "interrupted"
            trial.error = (self._last_error(trial) or "exit code 2").removeprefix("error: ")
            self.abort = self.abort or f"{trial.id} stopped on bad input: {trial.error}"
        else:
            status = "failed"
        trial.status = status
        trial.exit_code = rc
        trial.pid = None
        trial.ended_at = _now()
        trial.wall_time = summary.get("wall_time") or (time.monotonic() - active.started)
        self._histories.pop(trial.id, None)
        trial.metric = self._trial_metric(trial, summary)
        if status == "failed":
            trial.error = summary.get("error") or self._last_error(trial) or f"exit code {rc}"
        self.save()
        note = {
            "finished": "finished",
            "stopped": "stopped early (hyperband)",
            "interrupted": f"stopped on bad input: {trial.error}"
            if rc == 2 and self.stopping is None
            else "interrupted (rerun on resume)",
            "failed": f"failed: {trial.error}",
        }[status]
        value = f", {self.metric} {trial.metric:.4f}" if trial.metric is not None else ""
        self.say(f"[{self._done()}/{self.total}] {trial.id} {note}{value} ({trial.wall_time:.1f}s)")
        if (
            status == "finished"
            and self.metric
            and trial.metric is None
            and not self._warned_metric
        ):
            self._warned_metric = True
            keys = sorted(
                {k for h in self._history(trial) for k in h} | {k for k in summary if k != "status"}
            )
            self.say(
                f"warning: {trial.id} reported no {self.metric!r} (the sweep's metric); it has "
                f"{', '.join(keys)}"
            )

    def _last_error(self, trial: Trial) -> str | None:
        try:
            lines = (self.logs_dir / f"{trial.id}.log").read_text(errors="replace").splitlines()
        except OSError:
            return None
        attempt = [ln for ln in lines[::-1] if ln.strip()]
        for line in attempt:
            if line.startswith("=== attempt"):
                break
            if line.startswith(("error:", "run failed:")):
                return line
        return attempt[0].strip()[:300] if attempt else None

    def _reap(self) -> None:
        for active in list(self.active.values()):
            rc = active.proc.poll()
            if rc is not None:
                self._finish(active, rc)

    def _early_terminate(self) -> None:
        """Hyperband: stop running trials whose metric lags at the band they reached."""
        if "early_terminate" not in self.sweep or not self.active:
            return
        sweeps = import_sweeps()
        runs = [self._sweep_run(t) for t in self.state.trials if t.status != "pending"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            to_stop = sweeps.stop_runs(self.sweep, runs)
        for run in to_stop:
            active = self.active.get(run.name)
            if active is None or active.trial.stop_requested:
                continue
            done = len(self._history(active.trial))
            if active.epochs is None:
                from text_recognizer.experiment.compare import read_json

                config = read_json(self.state_dir / run.name / "config.json")
                active.epochs = (config.get("train_args") or {}).get("epochs")
            if active.epochs is not None and done >= active.epochs:
                continue  # its last epoch is done: let it finish and test
            active.trial.stop_requested = True
            self.save()
            lines = (run.early_terminate_info or {}).get("lines") or []
            why = next((ln for ln in lines if ln.startswith(f"Run: {run.name} ")), "")
            why = why[why.find("(Band") :].strip() if "(Band" in why else why
            self.say(f"hyperband: stopping {run.name} after epoch {done} {why}".rstrip())
            with contextlib.suppress(ProcessLookupError):
                active.proc.send_signal(signal.SIGTERM)

    # -- the loop -----------------------------------------------------------------------------

    def _recover(self) -> None:
        """Trials that were running when the last session ended are rerun (after their process,
        if it somehow survived, is gone); a trial hyperband had asked to stop counts as stopped."""
        for trial in self.state.trials:
            if trial.status not in STATUSES:
                self.say(
                    f"warning: {self.state_path}: {trial.id} has an unknown status "
                    f"{trial.status[:40]!r}; it is rerun"
                )
                trial.status = "interrupted"
            if trial.status not in ("running", "interrupted", "pending"):
                continue
            if trial.pid and _trial_process_alive(trial.pid, trial.id):
                self.say(f"waiting for {trial.id} (pid {trial.pid}) from the last session to stop")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(trial.pid, signal.SIGTERM)
                deadline = time.monotonic() + self.term_grace_s
                while _trial_process_alive(trial.pid, trial.id) and time.monotonic() < deadline:
                    time.sleep(0.2)
                if _trial_process_alive(trial.pid, trial.id):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(trial.pid, signal.SIGKILL)
            if trial.stop_requested and trial.status == "running":
                from text_recognizer.experiment.compare import read_json

                trial.status = "stopped"
                trial.metric = self._trial_metric(
                    trial, read_json(self.state_dir / trial.id / "summary.json")
                )
            else:
                trial.status = "pending"
            trial.pid = None
        self.save()

    def _next_trial(self) -> Trial | None:
        for trial in self.state.trials:
            if trial.status == "pending" and trial.id not in self.active:
                return trial
        return self._propose()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stopping is not None:
            self.force = True
            return
        self.stopping = signum

    def _stop_all(self) -> None:
        """Stop the running trials (SIGTERM, then SIGKILL after a grace period or a 2nd signal)."""
        if self.active:
            self.say(
                f"stopping: {len(self.active)} running trial(s) get SIGTERM and are rerun on "
                "resume (signal again to kill them now)"
            )
        for active in self.active.values():
            with contextlib.suppress(ProcessLookupError):
                active.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.term_grace_s
        while self.active:
            self._reap()
            if self.active and (self.force or time.monotonic() > deadline):
                for active in self.active.values():
                    with contextlib.suppress(ProcessLookupError):
                        active.proc.kill()
            time.sleep(0.05)

    def _loop(self) -> None:
        """Start trials while there is room, reap them, let hyperband stop laggards; until done."""
        while self.stopping is None:
            while len(self.active) < self.jobs and self.stopping is None and not self.abort:
                trial = self._next_trial()
                if trial is None:
                    break
                self._start(trial)
            if not self.active:
                break
            time.sleep(self.poll_s)
            self._reap()
            self._early_terminate()
        if self.stopping is not None:
            self._stop_all()

    def run(self) -> int:
        """Run the sweep to its end (or until a signal); return the exit code."""
        self._check_trial_folders()
        self.state.sessions += 1
        self._recover()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        started = time.monotonic()
        at_start = self._done()
        if at_start:
            self.say(f"resuming {self.state.name}: {at_start}/{self.total} trials done")
        failure: StorageError | None = None
        try:
            self._loop()
        except StorageError as e:  # the disk filled up (or went read-only) while trials ran
            failure = e
        finally:
            for active in list(self.active.values()):  # an unexpected error: leave no trial behind
                with contextlib.suppress(ProcessLookupError):
                    active.proc.kill()
            for s, handler in previous.items():
                signal.signal(s, handler)
            with contextlib.suppress(StorageError):
                self.save()
        if failure is not None:
            print_error(failure)
            return 1
        elapsed = time.monotonic() - started
        if self.stopping is not None:
            self.say(
                f"interrupted after {elapsed:.0f}s: {self._done()}/{self.total} trials done; "
                f"resume with: python training/local_sweep.py {self.source}"
                + (f" --state {self.state_dir}" if self.custom_state else "")
            )
            return 130
        if self.abort:
            raise SweepError(
                f"{self.abort}; the sweep stopped ({self._done()}/{self.total} trials done): fix it and "
                f"run the same command to resume"
            )
        self.say(f"\n{self.leaderboard()}")
        self._plot()
        counts = {
            s: sum(t.status == s for t in self.state.trials) for s in (*TERMINAL, "interrupted")
        }
        self.say(
            f"sweep {self.state.name}: {len(self.state.trials)} trials ({counts['finished']} "
            f"finished, {counts['stopped']} stopped early, {counts['failed']} failed"
            + (f", {counts['interrupted']} interrupted" if counts["interrupted"] else "")
            + f"); this session ran {self._done() - at_start} in {elapsed:.0f}s; state in "
            f"{self.state_dir}"
        )
        return 1 if counts["failed"] else 0

    # -- results ------------------------------------------------------------------------------

    def rows(self) -> list[Any]:
        """The trials as compare.RunInfo rows, with the sweep's status and metric."""
        from text_recognizer.experiment.compare import RunInfo, flatten, load_run

        rows = []
        for trial in self.state.trials:
            if trial.status == "pending":
                continue
            run_dir = self.state_dir / trial.id
            info = load_run(run_dir, trial.id) if run_dir.is_dir() else RunInfo(name=trial.id)
            if not info.flat:
                info.flat = flatten(trial.params)
            info.status = trial.status
            if self.metric:
                info.metrics.pop(self.metric, None)
                if trial.metric is not None:
                    info.metrics[self.metric] = trial.metric
            info.wall_time = info.wall_time or trial.wall_time
            rows.append(info)
        return rows

    def leaderboard(self) -> str:
        """The trials sorted by the sweep's metric (best first), with what differs between them."""
        from text_recognizer.experiment.compare import default_metrics, format_table

        rows = self.rows()
        if not rows:
            return "no trials ran"
        sort = self.metric or ("val_loss" if any("val_loss" in r.metrics for r in rows) else None)
        metrics = [sort] if sort else []
        metrics += [m for m in default_metrics(rows) if m.startswith("test_") and m != sort]
        table = format_table(rows, metrics, sort, desc=self.maximize, first_column="trial")
        scored = [r for r in rows if sort and sort in r.metrics]
        if len(scored) < 2:
            return table
        ordered = sorted(scored, key=lambda r: r.metrics[sort], reverse=self.maximize)
        best, worst = ordered[0], ordered[-1]
        params = {t.id: self._swept(t.params) for t in self.state.trials}
        return (
            f"{table}\nbest:  {best.name} {sort} {best.metrics[sort]:.4f}  "
            f"({describe_params(params[best.name])})\n"
            f"worst: {worst.name} {sort} {worst.metrics[sort]:.4f}  "
            f"({describe_params(params[worst.name])})"
        )

    def _swept(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters that vary (fixed `value:` ones, like the base config, left out)."""
        fixed = {k for k, spec in self.sweep["parameters"].items() if "value" in spec}
        return {k: v for k, v in params.items() if k not in fixed}

    def _plot(self) -> None:
        from text_recognizer.experiment.compare import plot_curves

        try:
            out = plot_curves(self.rows(), self.state_dir / "curves.png", title=self.state.name)
        except ImportError:
            self.say("note: matplotlib is not installed; no curves.png")
            return
        except Exception as e:  # a plot never fails a sweep
            self.say(f"warning: no curves.png ({type(e).__name__}: {e})")
            return
        if out is not None:
            self.say(f"curves: {out}")


def local_sweep_main(argv: list[str] | None = None) -> int:
    """Entry point of training/local_sweep.py."""
    from text_recognizer.errors import one_line_parser

    parser = one_line_parser(
        prog="local_sweep.py",
        description="Run a W&B sweep YAML offline with W&B's sweeps engine; resumable.",
        epilog="State: runs/sweeps/<name>/ (state.json, one folder per trial, logs/). Run the same "
        "command again to resume an interrupted sweep.",
    )
    parser.add_argument("sweep", help="sweep YAML (the file `wandb sweep` takes)")
    parser.add_argument(
        "--count",
        type=int,
        help="trials in the whole sweep (grid: default all; random/bayes: needed)",
    )
    parser.add_argument("--jobs", "-j", type=int, default=1, help="trials at a time (default 1)")
    parser.add_argument("--state", help="state folder (default runs/sweeps/<name>)")
    parser.add_argument(
        "--gpu",
        default="-1",
        help="what each trial passes to run_experiment: -1 leases any free GPU (default; the CPU "
        "when there is none), N a GPU index, cpu the CPU",
    )
    parser.add_argument("--nowandb", action="store_true", help="trials do not log to W&B")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check the YAML (program, command, every grid point) and exit: 0 when valid "
        "(tasks/sweep_wandb.sh runs this before `wandb sweep`)",
    )
    args = parser.parse_args(argv)
    state_dir: Path | None = None
    try:
        if args.jobs < 1 or args.jobs > MAX_JOBS:
            raise SweepError(f"--jobs must be from 1 to {MAX_JOBS}, got {args.jobs}")
        if args.count is not None and args.count < 1:
            raise SweepError(f"--count must be at least 1, got {args.count}")
        from text_recognizer.experiment.sweep import _parse_gpu

        gpu = _parse_gpu(args.gpu)
        sweep = load_sweep(args.sweep)
        check_sweep(sweep, args.sweep)
        checked = check_parameter_space(sweep, args.sweep)
        if args.check:
            print(f"{args.sweep}: valid ({checked} configs validated)")
            return 0
        if args.state is None:
            check_sweep_name(sweep, args.sweep)
        state_dir = Path(args.state) if args.state else default_state_dir(sweep, args.sweep)
        check_state_dir(state_dir)
        check_state_folder(state_dir, "--state folder" if args.state else "state folder")
        with state_lock(state_dir):
            runner = LocalSweep(
                sweep,
                args.sweep,
                state_dir,
                jobs=args.jobs,
                count=args.count,
                gpu=gpu,
                nowandb=args.nowandb,
                custom_state=args.state is not None,
            )
            runner.say(
                f"sweep {runner.state.name}: {sweep['method']} search, {runner.total} trials, "
                f"{args.jobs} at a time ({checked} configs validated); state in {state_dir}"
            )
            return runner.run()
    except UserError as e:
        return print_error(e)
    except OSError as e:  # the state folder cannot be made or written (full, read-only, ...)
        return print_error(storage_error(e, e.filename or state_dir or args.sweep))
    except KeyboardInterrupt:  # Ctrl-C before run() handles it (checking the YAML, recovering)
        print("interrupted before any trial started", file=sys.stderr)
        return 130
