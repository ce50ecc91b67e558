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


def lookup(
    registry: dict[str, Entry], name: Any, what: str, aliases: Aliases | None = None
) -> Entry:
    """Return the entry for ``name`` (or for the name it is an alias of) or raise a ConfigError
    that suggests the closest name and lists the valid ones."""
    name = canonical_name(registry, name, what, aliases)
    return registry[name]


@dataclass(frozen=True)
class Aliases:
    """Names other projects use for a registry's entries (FSDL's, the seed projects').

    ``same``: another name for one of ours, accepted. ``nearest``: a name with no equivalent here,
    refused with the entry that comes closest and why.
    """

    source: str  # whose names these are, for the messages: "FSDL"
    same: dict[str, str] = field(default_factory=dict)
    nearest: dict[str, tuple[str, str]] = field(default_factory=dict)


def canonical_name(
    registry: dict[str, Entry], name: Any, what: str, aliases: Aliases | None = None
) -> str:
    """The registry's own name for ``name``; an unknown name is a one-line ConfigError."""
    import difflib

    if isinstance(name, str) and name in registry:
        return name
    if aliases is not None and isinstance(name, str):
        if name in aliases.same:
            return aliases.same[name]
        if name in aliases.nearest:
            ours, why = aliases.nearest[name]
            raise ConfigError(
                f"{what} {name!r} is {aliases.source}'s and has no equivalent here; the closest "
                f"is {ours!r} ({why})"
            )
    valid = ", ".join(sorted(registry))
    hint = ""
    if isinstance(name, str):
        known = {n: n for n in registry}
        if aliases is not None:
            known |= {a: aliases.same[a] for a in aliases.same}
        folded = {k.lower(): v for k, v in known.items()}
        close = difflib.get_close_matches(name.lower(), list(folded), n=1, cutoff=0.6)
        if close:
            hint = f" (did you mean {folded[close[0]]!r}?)"
    raise ConfigError(f"unknown {what} {short_repr(name)}{hint}; valid {what}s: {valid}")
