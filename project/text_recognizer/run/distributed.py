"""torchrun support: one experiment over several processes with DistributedDataParallel.

``torchrun --nproc_per_node=N training/run_experiment.py CONFIG`` sets RANK, WORLD_SIZE and
LOCAL_RANK; ``setup`` joins the process group (gloo on the CPU, NCCL on CUDA with one GPU per local
rank). ``train_args.batch_size`` is per rank (the torch convention): the global batch is
``batch_size * WORLD_SIZE``. Only rank 0 logs, checkpoints and writes the run record.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo | None:
    """The torchrun environment, or None for a plain single-process run."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return DistInfo(
        int(os.environ["RANK"]),
        int(os.environ["WORLD_SIZE"]),
        int(os.environ.get("LOCAL_RANK", "0")),
    )


def setup(info: DistInfo, use_cuda: bool) -> str:
    """Join the process group; return this rank's device."""
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
        device = f"cuda:{info.local_rank}"
    else:
        device = "cpu"
    if not dist.is_initialized():
        with _signals_end_the_process():
            dist.init_process_group(
                "nccl" if use_cuda else "gloo", rank=info.rank, world_size=info.world_size
            )
    return device


@contextmanager
def _signals_end_the_process() -> Iterator[None]:
    """While the rendezvous blocks in C++ (waiting for the other ranks, up to torch's 30-minute
    timeout), Python's signal handlers cannot run: give SIGINT/SIGTERM their default action so
    Ctrl-C or a scheduler's SIGTERM still ends the process instead of being ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in saved:
        signal.signal(s, signal.SIG_DFL)
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def teardown(finished: bool = False) -> None:
    """Leave the process group. ``finished``: this rank's part went well, so wait for the others
    to be done too before tearing down: a worker rank that destroyed its group (and exited) while
    rank 0 was still testing and writing the record was seen to abort in gloo's destructor, and
    torchrun then stopped rank 0 mid-record. After a failure no rank waits (the others may be
    inside a collective that will never complete); a failed barrier is no reason to stay."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if finished and dist.get_world_size() > 1:
        with contextlib.suppress(Exception):
            dist.barrier()
    dist.destroy_process_group()


def active() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0
