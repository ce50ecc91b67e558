"""What a held lock in the lease folder stands for: a GPU slot or a CPU share, and who holds it.

A :class:`Lease` is an open descriptor holding a lock, plus the holder details (pid, run, since)
written into the file for ``status`` to show. Kept apart from the folder (which knows nothing of
GPUs) and from the GPUManager (which decides *which* slot to take), so that ``cpu_share`` and the
``run`` command's child process can use leases without the manager.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from text_recognizer.errors import UserError
from text_recognizer.leasing.gpu_inventory import GpuInfo
from text_recognizer.leasing.lease_folder import LeaseFolder

ENV_LEASE_INFO = "TEXT_RECOGNIZER_GPU_LEASE"  # exported to the run: "<uuid> slot <k>"
CPU_RUN_PREFIX = "cpu-run."


def slot_file(uuid: str, slot: int) -> str:
    """The lock file of one GPU slot: named by UUID, so it does not depend on any ordering."""
    return f"gpu-{re.sub(r'[^A-Za-z0-9._-]', '_', uuid)}.slot{slot}.lock"


def holder_info(run_name: str | None, **extra: Any) -> dict[str, Any]:
    """Who takes a lease (pid, host, run, since), written into its file for ``status`` to show."""
    now = time.time()
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "run": run_name or " ".join(sys.argv)[:200],
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
        "since_epoch": now,
        **extra,
    }


def pid_alive(pid: Any) -> bool:
    """Whether a holder's pid runs on this host: a held lock with a dead pid was taken elsewhere
    (a folder shared between hosts) or handed to a child (``gpu_manager run``)."""
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


class Lease:
    """A held slot. Keep this object for the whole run: its open descriptor is the lock, and the
    kernel frees the slot when the process ends, however it ends."""

    def __init__(
        self,
        folder: LeaseFolder,
        name: str,
        fd: int,
        holder: dict[str, Any],
        gpu: GpuInfo | None = None,
        slot: int = 0,
    ) -> None:
        self.folder = folder
        self.name = name
        self.fd: int | None = fd
        self.holder = holder
        self.gpu = gpu
        self.slot = slot
        self._write()

    @property
    def path(self) -> Path:
        """The lock file this lease holds."""
        return self.folder.path / self.name

    @property
    def held(self) -> bool:
        """Whether the lock is still ours (False once released)."""
        return self.fd is not None

    def _write(self) -> None:
        if self.fd is None:
            return
        data = json.dumps(self.holder, sort_keys=True).encode()
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, data, 0)
        except OSError:
            pass  # holder details are for the status command; the lock is what matters

    def update(self, **fields: Any) -> None:
        """Add details for the status command (e.g. the run folder once it exists)."""
        self.holder.update(fields)
        self._write()

    def release(self) -> None:
        """Free the slot now (the process ending does the same)."""
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def summary(self) -> dict[str, Any]:
        """Fields for summary.json."""
        if self.gpu is None:
            return {}
        return {"gpu_index": self.gpu.index, "gpu_uuid": self.gpu.uuid, "gpu_slot": self.slot}

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self.held else "released"
        return f"Lease({self.name!r}, {state})"


def inherited_lease(env: Mapping[str, str] | None = None) -> str | None:
    """The GPU a parent process leased for us (``gpu_manager run -- CMD``), if still held.

    A run started under such a parent must use that GPU rather than wait for a lease of its own,
    which the parent holds. Returns the description ("<uuid> slot <k>") or None.
    """
    env = os.environ if env is None else env
    info = env.get(ENV_LEASE_INFO, "")
    match = re.fullmatch(r"(\S+) slot (\d+)", info.strip())
    if not match or env.get("CUDA_VISIBLE_DEVICES") != match.group(1):
        return None
    folder = LeaseFolder(env=env)
    try:
        held = folder.is_held(slot_file(match.group(1), int(match.group(2))))
    except (UserError, OSError):
        return None
    return info if held else None
