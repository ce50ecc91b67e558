"""Per-epoch training checkpoints, so an interrupted run resumes exactly where it stopped.

``checkpoint.pt`` in the run folder holds everything the next epoch depends on: weights, optimizer,
scheduler and GradScaler states, every RNG (torch CPU/CUDA, numpy, python, the shuffling generator),
the epoch, the best loss and weights, the bad-epoch counter and the history. RNG states are stored
as tensors and lists, never pickled objects, so ``torch.load(weights_only=True)`` reads it: loading
a checkpoint runs no code. The previous one is kept as ``checkpoint.prev.pt``; a truncated or
corrupt latest file falls back to it.

A checkpoint is written with SIGTERM/SIGINT deferred (``signals_deferred``): a signal arriving
mid-write is raised right after the file is complete, so an interrupt never leaves half an epoch.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from text_recognizer.errors import UserError
from text_recognizer.fileio import atomic_path

CHECKPOINT_FORMAT = 1
LATEST, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"

_deferring = 0
_pending: list[int] = []


class CheckpointError(UserError):
    """No readable checkpoint to resume from (exit 2)."""


def deferring() -> bool:
    return _deferring > 0


def defer(signum: int) -> None:
    """Called by the signal handler while a checkpoint is being written: raise it afterwards."""
    _pending.append(signum)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGTERM/SIGINT (as routed by cli.py's handler) until the block is done."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if not _deferring and _pending:
        _pending.clear()
        from text_recognizer.experiment.runner import Interrupted

        raise Interrupted()


# ----- RNG states as tensors and lists (weights_only-loadable) ----------------------------------------
def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    for name, g in generators.items():
        if name in state["generators"]:
            g.set_state(state["generators"][name])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----- files -----------------------------------------------------------------------------------------
class Checkpointer:
    """Writes (``write=True``: rank 0 only under torchrun) and reads a run folder's checkpoints."""

    def __init__(self, run_dir: Path | str, write: bool = True) -> None:
        self.dir = Path(run_dir)
        self.latest, self.previous = self.dir / LATEST, self.dir / PREVIOUS
        self.write = write

    def save(self, state: dict[str, Any]) -> None:
        """Write atomically; the old latest becomes ``checkpoint.prev.pt`` only once the new is whole."""
        if not self.write:
            return
        with signals_deferred():
            payload = {"format_version": CHECKPOINT_FORMAT, **state}
            with atomic_path(self.latest) as tmp:
                torch.save(payload, tmp)
                if self.latest.exists():
                    os.replace(self.latest, self.previous)

    @staticmethod
    def read(path: Path) -> dict[str, Any]:
        """One checkpoint file, or an exception saying why it cannot be used."""
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(payload, dict) or payload.get("format_version") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a checkpoint of format {CHECKPOINT_FORMAT}")
        for key in ("epoch", "model", "optimizer", "rng", "history"):
            if key not in payload:
                raise ValueError(f"missing {key!r}")
        return payload

    def load(self) -> dict[str, Any] | None:
        """The newest readable checkpoint; None if the run has none (it stopped in epoch 1)."""
        if not self.latest.exists() and not self.previous.exists():
            return None
        problems = []
        for path in (self.latest, self.previous):
            if not path.exists():
                problems.append(f"{path.name} missing")
                continue
            try:
                state = self.read(path)
            except Exception as e:
                why = (str(e).splitlines() or ["empty or truncated"])[0][:120]
                problems.append(f"{path.name} unreadable ({type(e).__name__}: {why})")
                continue
            if problems:
                print(
                    f"warning: {problems[0]}; resuming from {path.name} (epoch {state['epoch']})",
                    file=sys.stderr,
                )
            return state
        raise CheckpointError(f"no usable checkpoint in {self.dir} ({'; '.join(problems)})")
