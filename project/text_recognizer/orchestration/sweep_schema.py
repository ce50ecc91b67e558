"""What W&B's sweep schema rejects: the YAML's top-level keys, its metric, early_terminate, and
(through sweep_space) its parameters.

``local_sweep.py --check`` runs before ``wandb sweep`` too, so a YAML the W&B server would refuse
is refused here first, with the same reasons, in one line each. Written from W&B's published
sweep-config schema (the JSON schema of its open-source ``sweeps`` package), without importing it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from text_recognizer.orchestration import hyperband
from text_recognizer.orchestration.sweep_space import (
    is_number,
    is_whole,
    mapping_problems,
    parameter_problems,
)

METHODS = ("bayes", "random", "grid", "custom")
GOALS = ("minimize", "maximize")
IMPUTES = ("latest", "best", "worst")
ENGINES = {"wandb": ("grid", "bayes", "random"), "optuna": ("custom",), "ax": ("custom",)}


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in choices else f"{v!r} is not one of {list(choices)}"


def _kind(test: Callable[[Any], bool], what: str) -> Callable[[Any], str | None]:
    return lambda v: None if test(v) else f"{v!r} is not {what}"


_STRING = _kind(lambda v: isinstance(v, str), "of type 'string'")
_NUMBER = _kind(is_number, "of type 'number'")
_INTEGER = _kind(is_whole, "of type 'integer'")
_METRIC_KEYS: dict[str, Callable[[Any], str | None]] = {
    "name": _STRING,
    "goal": _one_of(GOALS),
    "target": _NUMBER,
    "impute": _one_of(IMPUTES),
    "impute_while_running": _one_of((*IMPUTES, "false")),
}


def _metrics(value: Any) -> str | None:
    if not isinstance(value, list) or len(value) < 2:
        return f"{value!r} is not a list of at least 2 metrics"
    problems = [p for m in value for p in mapping_problems(m, "metric", _METRIC_KEYS, ("name",))]
    return problems[0] if problems else None


def _scheduler(value: Any) -> str | None:
    keys = {
        "engine": _one_of(tuple(ENGINES)),
        "source": _STRING,
        "optimizer": _STRING,
        "search_space": _STRING,
    }
    problems = mapping_problems(value, "scheduler", keys, ("engine",))
    return problems[0] if problems else None


def _controller(value: Any) -> str | None:
    """``controller: {type: local|cloud}`` (other keys W&B lets through)."""
    if not isinstance(value, Mapping):
        return f"{value!r} is not of type 'object'"
    if "type" not in value:
        return "'type' is a required property"
    return _one_of(("local", "cloud"))(value["type"])


_TOP: dict[str, Callable[[Any], str | None]] = {
    "apiVersion": _STRING,
    "kind": _one_of(("sweep",)),
    "controller": _controller,
    "description": _STRING,
    "program": _STRING,
    "job": _STRING,
    "image_uri": _STRING,
    "entity": _STRING,
    "project": _STRING,
    "method": _one_of(METHODS),
    "command": _kind(lambda v: isinstance(v, list), "of type 'array'"),
    "name": _STRING,
    "run_cap": lambda v: _INTEGER(v) or (None if v > 0 else f"run_cap {v} is not above 0"),
    "metric": lambda v: next(iter(mapping_problems(v, "metric", _METRIC_KEYS, ("name",))), None),
    "metrics": _metrics,
    "scheduler": _scheduler,
    "early_terminate": lambda v: None,  # checked below, with the bands it gives
    "parameters": lambda v: None,  # sweep_space's
}


def schema_violations(sweep: Mapping[str, Any]) -> list[str]:
    """Every reason W&B's schema would reject the sweep (empty when it accepts it)."""
    problems = [
        f"Additional properties are not allowed ({k!r} was unexpected)"
        for k in sweep
        if k not in _TOP
    ]
    if "method" not in sweep:
        problems.append("'method' is a required property")
    for key, check in _TOP.items():
        if key in sweep and (problem := check(sweep[key])):
            problems.append(problem if problem.startswith(key) else f"{key}: {problem}")
    scheduler = sweep.get("scheduler")
    searched = isinstance(scheduler, Mapping) and bool(scheduler.get("search_space"))
    if "parameters" in sweep:
        problems += parameter_problems(sweep["parameters"])
    elif not searched:
        problems.append("`parameters` is required unless `scheduler.search_space` is set")
    if "metric" in sweep and "metrics" in sweep:
        problems.append("`metric` and `metrics` cannot both be set")
    elif "metrics" in sweep and sweep.get("method") not in (None, "custom"):
        problems.append(f"`metrics` requires `method: custom` (got `method: {sweep['method']}`)")
    if scheduler is not None:
        problems += _scheduler_rules(sweep, scheduler)
    if "early_terminate" in sweep:
        problems += early_terminate_problems(sweep["early_terminate"])
    return list(dict.fromkeys(problems))


def _scheduler_rules(sweep: Mapping[str, Any], scheduler: Any) -> list[str]:
    problems = []
    controller = sweep.get("controller")
    if isinstance(controller, Mapping) and controller.get("type") == "local":
        problems.append("`controller: type: local` cannot be used together with `scheduler`")
    if "early_terminate" in sweep:
        problems.append("`early_terminate` cannot be used together with `scheduler`")
    if isinstance(scheduler, Mapping) and scheduler.get("engine") in ENGINES:
        engine = scheduler["engine"]
        if sweep.get("method") not in ENGINES[engine]:
            problems.append(
                f"`scheduler.engine: {engine}` does not support `method: {sweep.get('method')}`"
            )
    return problems


def early_terminate_problems(value: Any) -> list[str]:
    """What is wrong with ``early_terminate`` (hyperband, the only type), bands included: the
    checks hyperband itself makes wherever a sweep asks it."""
    return hyperband.problems(value)
