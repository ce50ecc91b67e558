"""Name -> class lookups that import the implementation only when it is needed.

Each registry entry carries the argument spec (``Param``s) so configs can be checked without importing
torch; ``load()`` imports the module (``"package.module:Attribute"``) on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from text_recognizer.errors import ConfigError
from text_recognizer.spec import Param, short_repr


@dataclass(frozen=True)
class Entry:
    """A registered dataset, network or model."""

    target: str  # "text_recognizer.datasets.emnist:EmnistDataset"
    args: dict[str, Param] = field(default_factory=dict)
    kind: str = ""  # what it produces or consumes: "characters" or "lines"
    help: str = ""
    models: tuple[str, ...] = ()  # networks only: the models it serves; empty = any of its kind

    def load(self) -> Any:
        module_name, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attr)


def lookup(registry: dict[str, Entry], name: Any, what: str) -> Entry:
    """Return the entry for ``name`` or raise a ConfigError that lists the valid names."""
    if not isinstance(name, str) or name not in registry:
        valid = ", ".join(sorted(registry))
        raise ConfigError(f"unknown {what} {short_repr(name)}; valid {what}s: {valid}")
    return registry[name]
