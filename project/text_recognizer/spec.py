"""A tiny schema for config sections: enough to validate a config in milliseconds, before torch loads.

Each dataset, network and the training loop declare their arguments as ``Param``s in light metadata
(no heavy imports), so ``run_experiment.py`` can reject a bad config at once with a one-line message.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from text_recognizer.errors import ConfigError

_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
    dict: "a JSON object",
    list: "a JSON list",
}


@dataclass(frozen=True)
class Param:
    """One argument: its type, default and the values it may take."""

    type: type | tuple[type, ...]
    default: Any = None
    min: float | None = None  # inclusive
    max: float | None = None  # inclusive
    gt: float | None = None  # exclusive lower bound
    lt: float | None = None  # exclusive upper bound
    choices: tuple[Any, ...] | None = None
    nullable: bool = False
    item_type: type | None = None  # for list parameters
    min_items: int = 0
    help: str = ""

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.type is list:
            return f"a list of {_TYPE_NAMES.get(self.item_type, 'values')}"
        bounds = []
        if self.gt is not None:
            bounds.append(f"> {self.gt}")
        if self.min is not None:
            bounds.append(f">= {self.min}")
        if self.lt is not None:
            bounds.append(f"< {self.lt}")
        if self.max is not None:
            bounds.append(f"<= {self.max}")
        base = _TYPE_NAMES.get(self.type, getattr(self.type, "__name__", str(self.type)))
        text = base + (" " + " and ".join(bounds) if bounds else "")
        return text + (" or null" if self.nullable else "")

    def check(self, value: Any, where: str) -> Any:
        """Return the value (ints widened to float where a float is expected) or raise ConfigError."""
        if value is None:
            if self.nullable:
                return None
            raise ConfigError(f"{where} must be {self.describe()}, got null")
        if self.choices is not None:
            if value not in self.choices:
                raise ConfigError(f"{where} must be {self.describe()}, got {value!r}")
            return value
        if self.type is list:
            if not isinstance(value, list) or len(value) < self.min_items:
                raise ConfigError(
                    f"{where} must be {self.describe()} with at least {max(self.min_items, 0)} "
                    f"items, got {value!r}"
                )
            item = Param(self.item_type or object, min=self.min, max=self.max, gt=self.gt)
            return [item.check(v, f"{where}[{i}]") for i, v in enumerate(value)]
        value = _coerce(value, self.type, where, self.describe())
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            bad = (
                (self.min is not None and value < self.min)
                or (self.max is not None and value > self.max)
                or (self.gt is not None and value <= self.gt)
                or (self.lt is not None and value >= self.lt)
            )
            if bad:
                raise ConfigError(f"{where} must be {self.describe()}, got {value!r}")
        return value


def _coerce(value: Any, expected: type | tuple[type, ...], where: str, describe: str) -> Any:
    types = expected if isinstance(expected, tuple) else (expected,)
    if bool in types and isinstance(value, bool):
        return value
    if isinstance(value, bool):  # bool is an int in Python; never accept it for numbers
        raise ConfigError(f"{where} must be {describe}, got {value!r}")
    if float in types and isinstance(value, int):
        return float(value)
    if object in types or isinstance(value, types):
        return value
    raise ConfigError(f"{where} must be {describe}, got {type(value).__name__} {value!r}")


def unknown_key_error(key: str, valid: list[str], where: str) -> ConfigError:
    """An error for an unknown key that lists the valid ones and suggests the closest."""
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listing = ", ".join(sorted(valid)) if valid else "none"
    return ConfigError(f"unknown key {key!r} in {where}{hint}; valid keys: {listing}")


def validate_args(args: Any, spec: dict[str, Param], where: str) -> dict[str, Any]:
    """Check a mapping against a spec and return it with defaults filled in."""
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(args).__name__}")
    for key in args:
        if key not in spec:
            raise unknown_key_error(key, list(spec), where)
    resolved = {}
    for key, param in spec.items():
        if key in args:
            resolved[key] = param.check(args[key], f"{where}.{key}")
        else:
            resolved[key] = param.default
    return resolved
