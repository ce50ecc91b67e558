"""A sweep's parameter space as W&B's sweep YAML defines it: specs, distributions and the grid.

W&B infers a spec's distribution from its keys unless it names one: ``values`` is categorical
(with ``probabilities``, weighted), ``value`` a constant, an integer ``min``/``max`` int_uniform, a
float ``min`` or ``max`` uniform, and ``parameters`` nests more specs under one name (the agent then
passes a dict). Each leaf becomes one ``Param``: its distribution's quantile function (a value from
a point u in [0, 1], which is how random and bayes search draw: engine.py's optuna samplers choose
u), its inverse (a past trial's value back to u, for bayes), and for the discrete ones its grid
values. Written here from W&B's documented semantics, so the same YAML means the same space
offline as on a W&B server, without W&B's engine and its numpy<2 pin.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

from text_recognizer.errors import SweepError

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
# distribution -> (required keys, optional keys with W&B's defaults)
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "constant": (("value",), {}),
    "categorical": (("values",), {}),
    "categorical_w_probabilities": (("values", "probabilities"), {}),
    "int_uniform": (("min", "max"), {}),
    "uniform": (("min", "max"), {}),
    "q_uniform": (("min", "max"), {"q": 1.0}),
    "log_uniform_values": (("min", "max"), {}),
    "q_log_uniform_values": (("min", "max"), {"q": 1.0}),
    "inv_log_uniform_values": (("min", "max"), {}),
    "normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_normal": ((), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "log_normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_log_normal": ((), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "beta": ((), {"a": 1.0, "b": 1.0}),
    "q_beta": ((), {"a": 1.0, "b": 1.0, "q": 1.0}),
}
# W&B's schema refuses these: their min/max are base-e exponents, not the limits themselves.
DEPRECATED = {
    "log_uniform": "log_uniform_values",
    "inv_log_uniform": "inv_log_uniform_values",
    "q_log_uniform": "q_log_uniform_values",
}
GRID_KINDS = ("constant", "categorical", "int_uniform", "q_uniform")
_LOG_KINDS = ("log_uniform_values", "q_log_uniform_values", "inv_log_uniform_values")
_EDGE = 1e-12  # u stays inside (0, 1): the unbounded distributions have no value at 0 or 1


def is_number(value: Any) -> bool:
    """A JSON number (a bool is not one, as W&B's schema has it)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_whole(value: Any) -> bool:
    """A JSON integer, as W&B's schema checks one (JSON Schema counts 3.0 as one)."""
    return is_integer(value) or (isinstance(value, float) and value.is_integer())


def canonical(value: Any) -> str:
    """A value as text that equal values share (3.0 and 3 alike, as W&B's grid compares them)."""

    def norm(v: Any) -> Any:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, dict):
            return {str(k): norm(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        return v

    return json.dumps(norm(value), sort_keys=True, default=repr)


def _quantize(x: float, q: Any) -> int | float:
    """W&B's q_ distributions: the nearest multiple of q, an int when q is an int."""
    r = round(x / q) * q
    return int(r) if is_integer(q) else float(r)


@dataclass(frozen=True)
class Param:
    """One leaf of the space: where it goes in the trial's parameters, its distribution, its spec
    (W&B's defaults filled in)."""

    path: tuple[str, ...]
    kind: str
    spec: Mapping[str, Any]

    @property
    def name(self) -> str:
        return ".".join(self.path)

    def quantile(self, u: float) -> Any:
        """The value at point u of the distribution (u in [0, 1])."""
        s, kind = self.spec, self.kind
        u = min(max(float(u), _EDGE), 1.0 - _EDGE)
        if kind == "constant":
            return s["value"]
        if kind == "categorical":
            return s["values"][min(int(u * len(s["values"])), len(s["values"]) - 1)]
        if kind == "categorical_w_probabilities":
            total = 0.0
            for value, p in zip(s["values"], s["probabilities"], strict=True):
                total += p
                if u < total:
                    return value
            return s["values"][-1]
        if kind == "int_uniform":
            return min(s["min"] + int(u * (s["max"] - s["min"] + 1)), s["max"])
        try:
            x = self._continuous(u)
        except OverflowError:
            x = math.inf
        if not math.isfinite(x):
            raise SweepError(
                f"parameter {self.name!r}: its {kind} distribution reaches {x}, a number too "
                "large to use; narrow its range"
            )
        return _quantize(x, s["q"]) if kind.startswith("q_") else float(x)

    def _continuous(self, u: float) -> float:
        s, kind = self.spec, self.kind
        if kind in ("uniform", "q_uniform"):
            return s["min"] + u * (s["max"] - s["min"])
        if kind in _LOG_KINDS:
            lo, hi = math.log(s["min"]), math.log(s["max"])
            return math.exp(lo + u * (hi - lo))
        if kind in ("normal", "q_normal"):
            return s["mu"] + s["sigma"] * NormalDist().inv_cdf(u)
        if kind in ("log_normal", "q_log_normal"):
            return math.exp(s["mu"] + s["sigma"] * NormalDist().inv_cdf(u))
        from scipy.special import betaincinv  # beta, q_beta

        return float(betaincinv(s["a"], s["b"], u))

    def cdf(self, value: Any) -> float:
        """The point u a continuous parameter's value sits at (the quantile's inverse)."""
        s, kind, v = self.spec, self.kind, float(value)
        if kind in ("uniform", "q_uniform"):
            u = (v - s["min"]) / (s["max"] - s["min"])
        elif kind in _LOG_KINDS:
            lo, hi = math.log(s["min"]), math.log(s["max"])
            u = (math.log(v) - lo) / (hi - lo) if v > 0 else 0.0
        elif kind in ("normal", "q_normal", "log_normal", "q_log_normal"):
            if kind in ("log_normal", "q_log_normal"):
                if v <= 0:
                    return 0.0
                v = math.log(v)
            u = NormalDist(s["mu"], s["sigma"]).cdf(v) if s["sigma"] > 0 else 0.5
        elif kind in ("beta", "q_beta"):
            from scipy.special import betainc

            u = float(betainc(s["a"], s["b"], min(max(v, 0.0), 1.0)))
        else:
            raise ValueError(f"{self.name}: a {kind} parameter has no cdf")
        return min(max(u, 0.0), 1.0)

    def grid_values(self) -> list[Any]:
        """The values a grid takes (W&B: categorical, constant, int_uniform, q_uniform only)."""
        s = self.spec
        if self.kind == "constant":
            return [s["value"]]
        if self.kind == "categorical":
            return list(s["values"])
        if self.kind == "int_uniform":
            return list(range(s["min"], s["max"] + 1))
        if self.kind == "q_uniform":  # numpy's arange(min, max, q): max itself is left out
            ints = all(is_integer(s[k]) for k in ("min", "max", "q"))
            n = max(0, math.ceil((s["max"] - s["min"]) / s["q"]))
            return [
                s["min"] + i * s["q"] if ints else float(s["min"] + i * s["q"]) for i in range(n)
            ]
        raise SweepError(
            f"parameter {self.name!r} is {self.kind}: a grid takes only "
            f"{', '.join(GRID_KINDS)} parameters; use method random or bayes with --count"
        )

    def grid_count(self) -> int:
        """How many distinct grid values, without listing a huge range."""
        s = self.spec
        if self.kind == "int_uniform":
            return s["max"] - s["min"] + 1
        if self.kind == "q_uniform":
            return max(0, math.ceil((s["max"] - s["min"]) / s["q"]))
        return len({canonical(v) for v in self.grid_values()})

    def representatives(self) -> list[Any]:
        """The values worth validating: every listed value, or the ends and middle."""
        if self.kind in ("constant", "categorical", "categorical_w_probabilities"):
            return [self.spec["value"]] if self.kind == "constant" else list(self.spec["values"])
        if self.kind == "int_uniform":
            return [self.spec["min"], self.spec["max"]]
        return [self.quantile(q) for q in (0.001, 0.5, 0.999)]


# ---------------------------------------------------------------------------------------------
# Reading specs


def _kind(spec: Mapping[str, Any]) -> str | None:
    """The distribution a spec names or W&B infers from its keys; None when it is neither."""
    if "distribution" in spec:
        return spec["distribution"] if isinstance(spec["distribution"], str) else None
    if "values" in spec:
        return "categorical_w_probabilities" if "probabilities" in spec else "categorical"
    if "value" in spec:
        return "constant"
    if "min" in spec and "max" in spec:
        ints = is_integer(spec["min"]) and is_integer(spec["max"])
        return "int_uniform" if ints else "uniform"
    return None


def _spec_problems(name: str, kind: str, spec: Mapping[str, Any]) -> list[str]:
    """What W&B's schema (and a sampler) would find wrong in a spec of a known distribution."""
    required, optional = DISTRIBUTIONS[kind]
    allowed = {*required, *optional, "distribution"}
    problems = [
        f"parameter {name!r}: {kind} takes {', '.join(sorted(allowed))}; {key!r} was unexpected"
        for key in spec
        if key not in allowed
    ]
    problems += [f"parameter {name!r}: {kind} needs {key!r}" for key in required if key not in spec]
    if problems:
        return problems
    s = {**optional, **spec}
    numbers = [k for k in (*required, *optional) if k not in ("value", "values", "probabilities")]
    for key in numbers:
        if kind == "int_uniform" and not is_integer(s[key]):
            problems.append(
                f"parameter {name!r}: int_uniform {key} must be an integer, got {s[key]!r}"
            )
        elif not is_number(s[key]):
            problems.append(f"parameter {name!r}: {key} must be a number, got {s[key]!r}")
    if problems:
        return problems
    if "values" in s and (not isinstance(s["values"], list) or not s["values"]):
        problems.append(f"parameter {name!r}: values must be a non-empty list, got {s['values']!r}")
    if kind == "categorical_w_probabilities" and not problems:
        probs = s["probabilities"]
        if not isinstance(probs, list) or not all(is_number(p) and p >= 0 for p in probs):
            problems.append(
                f"parameter {name!r}: probabilities must be a list of numbers >= 0, got {probs!r}"
            )
        elif len(probs) != len(s["values"]):
            problems.append(
                f"parameter {name!r}: {len(s['values'])} values but {len(probs)} probabilities"
            )
        elif not math.isclose(sum(probs), 1.0, rel_tol=1e-5, abs_tol=1e-8):
            problems.append(f"parameter {name!r}: probabilities {probs} do not sum to 1")
    if "min" in s and "max" in s and s["min"] >= s["max"]:
        problems.append(f"{name}: min {s['min']} is not less than max {s['max']}")
    if kind in _LOG_KINDS and s["min"] <= 0:
        problems.append(f"parameter {name!r}: {kind} min must be above 0, got {s['min']}")
    for key in ("q", "a", "b"):
        if key in s and s[key] <= 0:
            problems.append(f"parameter {name!r}: {key} must be above 0, got {s[key]}")
    if "sigma" in s and s["sigma"] < 0:
        problems.append(f"parameter {name!r}: sigma must be at least 0, got {s['sigma']}")
    return problems


def _walk(
    params: Any, prefix: tuple[str, ...], problems: list[str], where: str = "parameters"
) -> list[Param]:
    """The leaves of a parameters mapping, depth first in name order (W&B's order), collecting
    what is wrong in ``problems``."""
    if not isinstance(params, Mapping) or not params:
        problems.append(f"{where} must map parameter names to specs, got {params!r}")
        return []
    leaves: list[Param] = []
    for key in sorted(params, key=str):
        spec = params[key]
        name = ".".join((*prefix, str(key)))
        if not isinstance(key, str) or not NAME.fullmatch(key):
            problems.append(
                f"parameter name {key!r} does not match {NAME.pattern} (letters, digits, _ . -)"
            )
            continue
        if not isinstance(spec, Mapping):
            problems.append(f"parameter {name!r} must be a mapping, got {spec!r}")
            continue
        if "parameters" in spec and "distribution" not in spec:
            extra = sorted(k for k in spec if k != "parameters")
            if extra:
                problems.append(
                    f"parameter {name!r}: a nested spec holds only `parameters`; "
                    f"{extra[0]!r} was unexpected"
                )
                continue
            leaves += _walk(spec["parameters"], (*prefix, key), problems, f"{name}.parameters")
            continue
        kind = _kind(spec)
        if kind in DEPRECATED:
            problems.append(
                f"{name} uses {kind}, where min/max specify base-e exponents. "
                f"Use {DEPRECATED[kind]} to specify limit values."
            )
        elif kind not in DISTRIBUTIONS:
            problems.append(_unknown_spec(name, spec))
        else:
            found = _spec_problems(name, kind, spec)
            problems += found
            if not found:
                filled = {**DISTRIBUTIONS[kind][1], **spec, "distribution": kind}
                leaves.append(Param((*prefix, key), kind, filled))
    return leaves


def _unknown_spec(name: str, spec: Mapping[str, Any]) -> str:
    if "distribution" in spec:
        return (
            f"parameter {name!r}: unknown distribution {spec['distribution']!r}; "
            f"supported: {', '.join(DISTRIBUTIONS)}"
        )
    return (
        f"parameter {name!r}: {dict(spec)!r} is no parameter spec: give values, value, min and "
        "max, parameters (nested), or a distribution"
    )


def parameter_problems(params: Any) -> list[str]:
    """Everything wrong with a sweep's ``parameters`` (empty when it is a valid space)."""
    problems: list[str] = []
    _walk(params, (), problems)
    return problems


def parse_space(params: Any) -> list[Param]:
    """The space's parameters in W&B's order (names sorted, nested ones depth first)."""
    problems: list[str] = []
    leaves = _walk(params, (), problems)
    if problems:
        raise SweepError(problems[0])
    return leaves


# ---------------------------------------------------------------------------------------------
# Points of the space


def nest(values: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    """Leaf values -> the trial's parameters as the agent passes them (nested ones as a dict)."""
    out: dict[str, Any] = {}
    for path, value in values.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


MISSING = object()


def lookup(params: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """A leaf's value in a trial's parameters, or ``MISSING``."""
    node: Any = params
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return MISSING
        node = node[key]
    return node


def grid_size(space: list[Param]) -> int:
    """How many distinct points a grid has (what it proposes before it runs out)."""
    return math.prod(p.grid_count() for p in space)


def grid_columns(space: list[Param]) -> list[list[tuple[str, Any]]]:
    """Each parameter's distinct grid values, each with its ``canonical`` text."""
    columns = []
    for p in space:
        distinct: dict[str, Any] = {}
        for value in p.grid_values():
            distinct.setdefault(canonical(value), value)
        columns.append(list(distinct.items()))
    return columns


def grid_points(space: list[Param]) -> Iterator[dict[tuple[str, ...], Any]]:
    """Every grid point once, in W&B's order: the first parameter (by name) varies slowest."""
    for combo in itertools.product(*grid_columns(space)):
        yield {p.path: value for p, (_, value) in zip(space, combo, strict=True)}


def mapping_problems(
    value: Any,
    where: str,
    keys: Mapping[str, Callable[[Any], str | None]],
    required: tuple[str, ...] = (),
) -> list[str]:
    """What W&B's schema says of a mapping: unknown keys, missing required ones, and each known
    key's own check (shared by the sweep schema and hyperband's early_terminate)."""
    if not isinstance(value, Mapping):
        return [f"{where}: {value!r} is not of type 'object'"]
    problems = [
        f"{where}: Additional properties are not allowed ({k!r} was unexpected)"
        for k in value
        if k not in keys
    ]
    problems += [f"{where}: {k!r} is a required property" for k in required if k not in value]
    for key, check in keys.items():
        if key in value and (problem := check(value[key])):
            problems.append(f"{where}.{key}: {problem}")
    return problems
