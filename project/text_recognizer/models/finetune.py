"""Start a run from another run's weights (``init_from``), resizing the output layer like kraken.

Every tensor of the source network is copied into the new one, which must be the same network with
the same ``network_args``. Only the output layer may differ, when the two character sets do: its
rows follow the characters, so a character both sets hold keeps its trained row, a new character
keeps the new network's fresh row, and a character the new set lacks is dropped (kraken's
``--resize``). Anything else that does not fit is one DataError line (exit 2), raised before the
run folder exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from text_recognizer.errors import DataError


@dataclass(frozen=True)
class Resized:
    """How the output layer's classes were carried over: kept (trained rows), new (fresh rows),
    dropped (source classes the new character set lacks)."""

    kept: int
    new: int
    dropped: int

    def as_dict(self) -> dict[str, int]:
        return {"kept": self.kept, "new": self.new, "dropped": self.dropped}


def init_from(model: Any, path: str | Path) -> Resized:
    """Load a saved run's weights into ``model`` (its network freshly built); see the module."""
    from text_recognizer.models import MODELS
    from text_recognizer.models.weights_file import read_weights

    source = read_weights(path)
    kind, want = MODELS[source["model"]].kind, MODELS[type(model).__name__].kind
    if kind != want:
        raise DataError(
            f"init_from {path} holds a {source['model']} ({kind}); this run trains a "
            f"{type(model).__name__} ({want}): start from a run of the same kind"
        )
    if source["network"] != model.network_name:
        raise DataError(
            f"init_from {path} holds a {source['network']!r} network; this run builds "
            f"{model.network_name!r}: use the same network (and network_args)"
        )
    target = model.network.state_dict()
    output = output_keys(model.network, len(model.mapping))
    weights, resized = _carry_over(source["state_dict"], target, output, source, model, path)
    model.network.load_state_dict(weights)
    return resized


def output_keys(network: nn.Module, num_classes: int) -> tuple[str, ...]:
    """The parameter names of the output layer: the last Linear or Conv1d emitting one value per
    class (every network here ends in one)."""
    found: tuple[str, ...] = ()
    for name, module in network.named_modules():
        width = getattr(module, "out_features", getattr(module, "out_channels", None))
        if isinstance(module, nn.Linear | nn.Conv1d) and width == num_classes:
            found = tuple(f"{name}.{p}" for p, _ in module.named_parameters(recurse=False))
    return found


def _carry_over(
    weights: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    output: tuple[str, ...],
    source: dict[str, Any],
    model: Any,
    path: str | Path,
) -> tuple[dict[str, torch.Tensor], Resized]:
    missing, extra = sorted(set(target) - set(weights)), sorted(set(weights) - set(target))
    if missing or extra:
        raise DataError(
            f"init_from {path}: the saved {source['network']!r} network has other layers "
            f"({len(missing)} missing, {len(extra)} unexpected, e.g. "
            f"{(missing or extra)[0]!r}); use the network_args it was trained with"
        )
    old = list(source["data_config"]["mapping"])
    new = list(model.mapping)
    rows = [old.index(c) if c in old else -1 for c in new]
    out: dict[str, torch.Tensor] = {}
    for name, want in target.items():
        got = weights[name]
        if name in output and old != new:
            out[name] = _resize_rows(got, want, rows, name, path)
        elif got.shape == want.shape and got.dtype == want.dtype:
            out[name] = got
        else:
            raise DataError(
                f"init_from {path}: {name} is {list(got.shape)} there and {list(want.shape)} "
                "here; use the network_args it was trained with"
            )
    kept = sum(r >= 0 for r in rows)
    return out, Resized(kept, len(new) - kept, len(set(old) - set(new)))


def _resize_rows(
    got: torch.Tensor, want: torch.Tensor, rows: list[int], name: str, path: str | Path
) -> torch.Tensor:
    """The new output layer: the trained row of every character both sets hold, else the fresh one."""
    if got.shape[1:] != want.shape[1:] or got.dtype != want.dtype:
        raise DataError(
            f"init_from {path}: the output layer {name} is {list(got.shape)} there and "
            f"{list(want.shape)} here; use the network_args it was trained with"
        )
    resized = want.detach().clone()
    for i, row in enumerate(rows):
        if row >= 0:
            resized[i] = got[row]
    return resized
