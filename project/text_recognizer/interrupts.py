"""SIGTERM and SIGINT during a run: raised as ``Interrupted``, but never in the middle of a write.

``run_experiment`` installs :func:`interrupts_raised` for the length of a run; code that must not be
cut in half (writing a checkpoint) runs under :func:`signals_deferred`, and a signal arriving then
is raised as soon as the block is done. Inside a Slurm job SIGUSR1 and SIGUSR2 count too: Slurm
sends one before the time limit and on preemption (``--signal``; submitit asks for USR2), and the
run must checkpoint and end ``interrupted`` then, not die of the signal's default action.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from text_recognizer.errors import Interrupted

_deferring = 0
_pending: list[int] = []


def _on_signal(signum: int, frame: Any) -> None:
    if _deferring:  # a write is under way: interrupt right after it
        _pending.append(signum)
        return
    raise Interrupted()


@contextmanager
def interrupts_raised() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise ``Interrupted`` (a BaseException, so no
    ``except Exception`` swallows it); the previous handlers come back afterwards."""
    signums = [signal.SIGTERM, signal.SIGINT]
    if os.environ.get("SLURM_JOB_ID"):  # Slurm's warning before the time limit or a preemption
        signums += [signal.SIGUSR1, signal.SIGUSR2]
    previous = {s: signal.signal(s, _on_signal) for s in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGTERM/SIGINT until the block is done, then raise ``Interrupted`` if one came."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
    if not _deferring and _pending:
        _pending.clear()
        raise Interrupted()
