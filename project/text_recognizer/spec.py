"""A tiny schema for config sections: enough to validate a config in milliseconds, before torch loads.

Each dataset, network and the training loop declare their arguments as ``Param``s in light metadata
(no heavy imports), so ``run_experiment.py`` can reject a bad config at once with a one-line message.
"""

from __future__ import annotations

import difflib
import math
import reprlib
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
_NUMBERS = (int, float)
SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit
_SHORT = reprlib.Repr()  # a hostile value (a megabyte string, a list nested 10^4 deep) stays short
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel, _SHORT.maxlist = 60, 60, 3, 6


def short_repr(value: Any) -> str:
    """``repr`` cut to a few dozen characters, for quoting user input in a one-line error."""
    return _SHORT.repr(value)


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
    max_items: int | None = None  # required for lists
    help: str = ""

    def __post_init__(self) -> None:
        """Every number and list declares an upper bound: an absurd value (``lstm_hidden`` 10^5,
        ``num_train`` 10^12) is refused at validation, not met later as an out-of-memory crash."""
        numeric = self.type in _NUMBERS or (self.type is list and self.item_type in _NUMBERS)
        if numeric and self.choices is None and self.max is None and self.lt is None:
            raise TypeError(f"{self}: a numeric parameter needs max= or lt=")
        if self.type is list and self.max_items is None:
            raise TypeError(f"{self}: a list parameter needs max_items=")

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.type is list:
            each = " ".join(filter(None, (_TYPE_NAMES.get(self.item_type), self._bounds())))
            return f"a list of at least {self.min_items} items and at most {self.max_items}" + (
                f", each {each}" if each else ""
            )
        base = _TYPE_NAMES.get(self.type, getattr(self.type, "__name__", str(self.type)))
        text = base + (" " + self._bounds() if self._bounds() else "")
        return text + (" or null" if self.nullable else "")

    def _bounds(self) -> str:
        bounds = []
        if self.gt is not None:
            bounds.append(f"> {self.gt}")
        if self.min is not None:
            bounds.append(f">= {self.min}")
        if self.lt is not None:
            bounds.append(f"< {self.lt}")
        if self.max is not None:
            bounds.append(f"<= {self.max:g}" if isinstance(self.max, float) else f"<= {self.max}")
        return " and ".join(bounds)

    def check(self, value: Any, where: str) -> Any:
        """Return the value (ints widened to float where a float is expected) or raise ConfigError."""
        if value is None:
            if self.nullable:
                return None
            raise ConfigError(f"{where} must be {self.describe()}, got null")
        if self.choices is not None:
            if isinstance(value, (dict, list)) or value not in self.choices:
                raise ConfigError(f"{where} must be {self.describe()}, got {short_repr(value)}")
            return value
        if self.type is list:
            return self._check_list(value, where)
        value = _coerce(value, self.type, where, self.describe())
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where} must be {self.describe()} (a finite number), got {value}")
        if isinstance(value, _NUMBERS) and not isinstance(value, bool):
            bad = (
                (self.min is not None and value < self.min)
                or (self.max is not None and value > self.max)
                or (self.gt is not None and value <= self.gt)
                or (self.lt is not None and value >= self.lt)
            )
            if bad:
                raise ConfigError(f"{where} must be {self.describe()}, got {short_repr(value)}")
        return value

    def _check_list(self, value: Any, where: str) -> list[Any]:
        count = len(value) if isinstance(value, list) else -1
        if count < self.min_items or (self.max_items is not None and count > self.max_items):
            what = f"{count} items" if count >= 0 else type(value).__name__
            raise ConfigError(f"{where} must be {self.describe()}, got {what} {short_repr(value)}")
        bounds = {"min": self.min, "max": self.max, "gt": self.gt, "lt": self.lt}
        item = Param(self.item_type or object, **bounds)
        return [item.check(v, f"{where}[{i}]") for i, v in enumerate(value)]


def _coerce(value: Any, expected: type | tuple[type, ...], where: str, describe: str) -> Any:
    types = expected if isinstance(expected, tuple) else (expected,)
    if bool in types and isinstance(value, bool):
        return value
    if isinstance(value, bool):  # bool is an int in Python; never accept it for numbers
        raise ConfigError(f"{where} must be {describe}, got {value!r}")
    if float in types and isinstance(value, int) and not isinstance(value, float):
        if abs(value) > 1e300:  # float() would overflow
            raise ConfigError(f"{where} must be {describe}, got an integer far too large")
        return float(value)
    if object in types or isinstance(value, types):
        return value
    raise ConfigError(f"{where} must be {describe}, got {type(value).__name__} {short_repr(value)}")


def unknown_key_error(key: str, valid: list[str], where: str) -> ConfigError:
    """An error for an unknown key that lists the valid ones and suggests the closest."""
    close = difflib.get_close_matches(key[:100], valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listing = ", ".join(sorted(valid)) if valid else "none"
    return ConfigError(f"unknown key {short_repr(key)} in {where}{hint}; valid keys: {listing}")


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
