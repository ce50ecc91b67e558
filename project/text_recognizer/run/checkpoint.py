"""Per-epoch training checkpoints, so an interrupted run resumes exactly where it stopped.

``checkpoint.pt`` in the run folder holds everything the next epoch depends on: weights, optimizer,
scheduler and GradScaler states, every RNG (torch CPU/CUDA, numpy, python, the shuffling generator),
the epoch, the best loss and weights, the bad-epoch counter, the history and the config trained
under (a resume compares it with `config.json`). RNG states are stored
as tensors and lists, never pickled objects, so ``torch.load(weights_only=True)`` reads it: loading
a checkpoint runs no code. The previous one is kept as ``checkpoint.prev.pt``; a truncated or
corrupt latest file falls back to it.

A checkpoint is written with SIGTERM/SIGINT deferred (``interrupts.signals_deferred``): a signal arriving
mid-write is raised right after the file is complete, so an interrupt never leaves half an epoch.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from text_recognizer import progress
from text_recognizer.errors import CheckpointError, storage_cause, storage_error
from text_recognizer.fileio import atomic_path
from text_recognizer.interrupts import signals_deferred
from text_recognizer.run.records import CHECKPOINT_NAMES

CHECKPOINT_FORMAT = 1
LATEST, PREVIOUS = CHECKPOINT_NAMES


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

    def __init__(
        self,
        run_dir: Path | str,
        validate: Callable[[dict[str, Any]], None],
        write: bool = True,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.dir = Path(run_dir)
        # Raises ValueError for a checkpoint whose training state is incomplete: the state's
        # keys are the training loop's business (models/training.py), not this file's.
        self.validate = validate
        self.latest, self.previous = self.dir / LATEST, self.dir / PREVIOUS
        self.write = write
        # The config trained under, kept in each checkpoint: a resume tells an edited config.json.
        self.config = json.dumps(config) if config is not None else None

    def save(self, state: dict[str, Any]) -> None:
        """Write atomically; the old latest becomes ``checkpoint.prev.pt`` only once the new is whole.

        A full disk or a read-only folder is a one-line StorageError naming the checkpoint."""
        if not self.write:
            return
        with signals_deferred():
            payload = {"format_version": CHECKPOINT_FORMAT, **state}
            if self.config is not None:
                payload["config"] = self.config
            try:
                with atomic_path(self.latest) as tmp:
                    with open(tmp, "wb") as f:  # a file object: ENOSPC reaches us as an OSError
                        torch.save(payload, f)
                    if self.latest.exists():
                        os.replace(self.latest, self.previous)
            except Exception as e:  # torch wraps ENOSPC in a RuntimeError
                cause = storage_cause(e)
                if cause is None:
                    raise
                raise storage_error(cause, self.latest) from None

    def read(self, path: Path) -> dict[str, Any]:
        """One checkpoint file, or an exception saying why it cannot be used.

        Read like a weights file (``models.weights_file``): the archive's metadata record is
        bounded before it is read and the tensors are memory-mapped, so a hostile checkpoint
        cannot make the reader allocate more than the file holds."""
        from text_recognizer.models.weights_file import check_archive

        check_archive(path, "checkpoint")
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(payload, dict) or payload.get("format_version") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a checkpoint of format {CHECKPOINT_FORMAT}")
        self.validate(payload)
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
                why = (str(e).splitlines() or ["empty or truncated"])[0]
                why = why.removeprefix(f"cannot read checkpoint {path}: ")[:120]
                problems.append(f"{path.name} unreadable ({type(e).__name__}: {why})")
                continue
            if problems:
                progress.line(
                    f"warning: {problems[0]}; resuming from {path.name} (epoch {state['epoch']})",
                )
            return state
        raise CheckpointError(f"no usable checkpoint in {self.dir} ({'; '.join(problems)})")
