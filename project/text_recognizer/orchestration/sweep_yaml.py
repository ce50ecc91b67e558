"""The sweep YAML: read it safely, check it as W&B would (and more), and walk its parameter space.

One module for everything that is a property of the file alone, before any state or trial exists:
``local_sweep.py --check`` (and ``tasks/sweep_wandb.sh`` before ``wandb sweep``) runs exactly
these checks, and the scheduler asks it only for the grid size, the varied parameters and the
trial's command line. The file is untrusted: its size, depth and alias expansion are bounded before
anything walks it, and it may only run this project's training/run_sweep.py.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from text_recognizer.errors import SweepError, UserError, one_line
from text_recognizer.fileio import read_small_text
from text_recognizer.orchestration.sweep_schema import schema_violations
from text_recognizer.orchestration.sweep_space import Param, grid_points, nest, parse_space
from text_recognizer.orchestration.sweep_space import grid_size as space_grid_size
from text_recognizer.orchestration.trial_args import (
    format_arg,
    parse_trial_args,
    resolve_path,
    trial_config,
)

SUPPORTED_METHODS = ("grid", "random", "bayes")
PROGRAM = "run_sweep.py"
DEFAULT_COMMAND = ["${env}", "${interpreter}", "${program}", "${args}"]
MAX_GRID_CHECK = 10000
MAX_GRID = 100_000  # the engine walks the grid for every proposal
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 100_000
_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


# ---------------------------------------------------------------------------------------------
# Reading the file


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


# ---------------------------------------------------------------------------------------------
# Checking it: what W&B would reject, plus what a local sweep needs


def check_sweep(sweep: dict[str, Any], source: str = "sweep") -> None:
    """Everything W&B would reject, plus what a local sweep needs: raise SweepError, else None."""
    method = _check_method(sweep, source)
    _check_parameter_specs(sweep.get("parameters"), source)
    violations = schema_violations(sweep)
    if violations:
        reasons = one_line("; ".join(violations), 1000)
        raise SweepError(f"{source}: W&B would reject this sweep: {reasons}")
    check_program(sweep, source)
    _check_metric(sweep, method, source)
    if method == "grid":
        _check_grid(sweep, source)


def _check_method(sweep: dict[str, Any], source: str) -> str:
    """The search method, one a local sweep runs (W&B's hyperopt-style others are refused)."""
    method = sweep.get("method")
    if method is None:
        raise SweepError(f"{source}: no `method` (one of {', '.join(SUPPORTED_METHODS)})")
    if method not in SUPPORTED_METHODS:
        raise SweepError(
            f"{source}: unknown method {method!r}; a local sweep runs "
            f"{', '.join(SUPPORTED_METHODS)}"
        )
    return method


def _check_parameter_specs(params: Any, source: str) -> None:
    """Parameters map names to spec mappings, with finite numbers (before W&B's schema sees them,
    so the message says what is wrong rather than what the schema expected)."""
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


def _check_metric(sweep: dict[str, Any], method: str, source: str) -> None:
    """Bayes search and early termination need a metric to rank trials by; a metric has a name."""
    metric = sweep.get("metric")
    if (method == "bayes" or "early_terminate" in sweep) and not metric:
        why = "bayes search" if method == "bayes" else "early_terminate"
        raise SweepError(f"{source}: {why} needs a `metric` ({{name: val_loss, goal: minimize}})")
    if metric is not None and not (isinstance(metric, dict) and metric.get("name")):
        raise SweepError(
            f"{source}: `metric` needs a name, e.g. {{name: val_loss, goal: minimize}}"
        )


def _check_grid(sweep: dict[str, Any], source: str) -> None:
    """A grid the engine can walk (it walks the grid for every proposal): every parameter has
    grid values, and there are not too many points."""
    try:
        size = grid_size(sweep)
    except SweepError as e:
        raise SweepError(one_line(f"{source}: {e}")) from None
    if size > MAX_GRID:
        raise SweepError(
            f"{source}: the grid has {size:.3g} points, more than the {MAX_GRID} a sweep can "
            "list; use fewer values, or method random/bayes with --count"
        )


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


# ---------------------------------------------------------------------------------------------
# The parameter space


def _space(sweep: dict[str, Any]) -> list[Param]:
    return parse_space(sweep["parameters"])


def grid_size(sweep: dict[str, Any]) -> int:
    """How many points a grid sweep has (what the engine proposes before it runs out)."""
    return space_grid_size(_space(sweep))


def parameter_points(sweep: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The points to validate: the whole grid when it is small enough, else every value (or the
    ends and middle of every distribution) of each parameter, the others at their first value."""
    space = _space(sweep)
    if sweep["method"] == "grid" and grid_size(sweep) <= MAX_GRID_CHECK:
        for point in grid_points(space):
            yield nest(point)
        return
    reps = {p.path: p.representatives() for p in space}
    first = {path: values[0] for path, values in reps.items()}
    yield nest(first)
    for path, values in reps.items():
        for value in values[1:]:
            yield nest({**first, path: value})


def sweep_metric(sweep: dict[str, Any]) -> tuple[str | None, bool]:
    """The metric trials are ranked by (None without one), and whether higher is better."""
    metric = sweep.get("metric") or {}
    return metric.get("name"), metric.get("goal") == "maximize"


def swept_params(sweep: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The parameters that vary (fixed `value:` ones, like the base config, left out)."""
    fixed = {k for k, spec in sweep["parameters"].items() if "value" in spec}
    return {k: v for k, v in params.items() if k not in fixed}


def describe_params(params: dict[str, Any]) -> str:
    """Parameters as the trial's arguments: ``--network_args.layer_size=256 ...``."""
    return " ".join(format_arg(k, v) for k, v in params.items())


def check_parameter_space(sweep: dict[str, Any], source: str = "sweep") -> int:
    """Validate the experiment config of every grid point (or of the edges of the space) up front.

    Returns how many points were checked. Raises SweepError naming the first bad point.
    """
    from text_recognizer.config import validate_config

    checked = 0
    seen: set[str] = set()
    try:  # at most MAX_GRID_CHECK points
        points = list(parameter_points(sweep))
    except SweepError as e:  # a distribution whose edges overflow
        raise SweepError(one_line(f"{source}: {e}")) from None
    for params in points:
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
