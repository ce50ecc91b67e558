"""GPU leases (DESIGN.md §6): one exclusive file lock per GPU slot, held for the whole run.

Why OS file locks: the kernel drops an ``flock`` when the process that took it ends, however it ends
(exit, exception, kill -9, the OOM killer), so a lease can never outlive its run, two runs can never
hold the same slot, and there is no server to run and nothing to clean up. (FSDL's manager held a
Redis lock for five seconds, so two runs could share a GPU.)

    python -m text_recognizer.experiment.gpu_manager status          # GPUs, leases, holders
    python -m text_recognizer.experiment.gpu_manager run -- CMD ...   # any command on a leased GPU

Settings (arguments win over the environment):

    TEXT_RECOGNIZER_GPU_LEASES           lease folder (default /tmp/text-recognizer-gpu-leases-$USER)
    TEXT_RECOGNIZER_GPU_SLOTS            runs per GPU (default 1)
    TEXT_RECOGNIZER_GPU_MAX_MEMORY       skip a GPU whose memory is more than this % in use (50)
    TEXT_RECOGNIZER_GPU_MAX_UTILIZATION  skip an unleased GPU busier than this % (50)
    TEXT_RECOGNIZER_GPU_WAIT_TIMEOUT     seconds to wait for a free GPU (default: no limit)
    TEXT_RECOGNIZER_FAKE_GPUS            a JSON file of GPUs that replaces NVML (tests, demos)

Which GPUs there are and how loaded they are comes from
:mod:`~text_recognizer.experiment.gpu_inventory`; its public names are re-exported here. The same
folder also holds one ``cpu-run.N.lock`` per running experiment, so that runs started side by side
can split the CPU cores between them (:mod:`~text_recognizer.experiment.cpu_share`); ``status``
lists those runs too.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import math
import os
import random
import re
import shlex
import signal
import socket
import stat
import sys
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from text_recognizer.errors import (
    GpuWaitTimeout,
    LeaseFolderError,
    UserError,
    WaitInterrupted,
    one_line_parser,
    print_error,
)
from text_recognizer.experiment.gpu_inventory import (
    ENV_FAKE_GPUS,
    FakeInventory,
    GpuInfo,
    GpuInventory,
    NoGpuDriver,
    NvmlInventory,
    filter_visible,
    inventory_from_env,
    rank_gpus,
)

__all__ = [
    "CPU_RUN_PREFIX",
    "DEFAULT_MAX_MEMORY",
    "DEFAULT_MAX_UTILIZATION",
    "DEFAULT_SLOTS",
    "ENV_FAKE_GPUS",
    "ENV_LEASES",
    "ENV_LEASE_INFO",
    "ENV_MAX_MEMORY",
    "ENV_MAX_UTILIZATION",
    "ENV_SLOTS",
    "ENV_TIMEOUT",
    "JUNK_HINT",
    "STATUS_COMMAND",
    "FakeInventory",
    "GPUManager",
    "GpuInfo",
    "GpuInventory",
    "GpuWaitTimeout",
    "Lease",
    "LeaseFolder",
    "LeaseFolderError",
    "NoGpuDriver",
    "NvmlInventory",
    "WaitInterrupted",
    "default_lease_dir",
    "filter_visible",
    "format_status",
    "inherited_lease",
    "inventory_from_env",
    "main",
    "rank_gpus",
    "slot_file",
]

ENV_LEASES = "TEXT_RECOGNIZER_GPU_LEASES"
ENV_SLOTS = "TEXT_RECOGNIZER_GPU_SLOTS"
ENV_MAX_MEMORY = "TEXT_RECOGNIZER_GPU_MAX_MEMORY"
ENV_MAX_UTILIZATION = "TEXT_RECOGNIZER_GPU_MAX_UTILIZATION"
ENV_TIMEOUT = "TEXT_RECOGNIZER_GPU_WAIT_TIMEOUT"
ENV_LEASE_INFO = "TEXT_RECOGNIZER_GPU_LEASE"  # exported to the run: "<uuid> slot <k>"

DEFAULT_SLOTS = 1
DEFAULT_MAX_MEMORY = 50.0
DEFAULT_MAX_UTILIZATION = 50.0
STATUS_COMMAND = "python -m text_recognizer.experiment.gpu_manager status"
CPU_RUN_PREFIX = "cpu-run."
_NO_LOCK_ERRNOS = {
    errno.ENOLCK,
    errno.EOPNOTSUPP,
    errno.ENOSYS,
    errno.EINVAL,
    getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
}


# ----- the lease folder --------------------------------------------------------------------------


def _user() -> str:
    try:
        import getpass

        name = getpass.getuser()
    except Exception:
        name = str(os.getuid())
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or str(os.getuid())


def default_lease_dir() -> Path:
    """``/tmp/text-recognizer-gpu-leases-$USER``.

    Why not ``$XDG_RUNTIME_DIR`` or ``$TMPDIR``: every run of one user on one host must find the
    same folder, whether it was started from a login shell, tmux, cron, nohup or ssh; the runtime
    dir is unset in some of those and removed at logout, and TMPDIR is often per job.
    """
    return Path("/tmp") / f"text-recognizer-gpu-leases-{_user()}"


def _no_locks_error(folder: Path, detail: str) -> LeaseFolderError:
    return LeaseFolderError(
        f"the lease folder {folder} is on a filesystem without working file locks ({detail}); "
        f"set {ENV_LEASES} to a folder on a local disk, e.g. {default_lease_dir()}"
    )


_CHECKED_FOLDERS: set[str] = set()
_SKIPPED: set[str] = set()
_SAFE_OPEN = os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
# open() errors that mean "this file is not ours to lock": skip it, lease the others.
_NOT_OURS_ERRNOS = {errno.ELOOP, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENXIO}
MAX_HOLDER_BYTES = 64 * 1024
JUNK_HINT = "not a lease file of ours; its owner or an admin must remove it"


def _not_a_lease(st: os.stat_result) -> str | None:
    """Why the file ``st`` describes is no lease file we may write into, or None when it is one.

    Anyone can plant a name in a shared (1777) folder: a hard link there is someone's file under a
    slot's name, and the holder JSON would be written into it; another user's file that is not
    writable by everyone is theirs, not a lease (only root could open it). A lease file is a
    regular file with one link, ours or made writable by everyone by the run that created it.
    """
    kinds = {stat.S_IFLNK: "a symlink", stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO"}
    if not stat.S_ISREG(st.st_mode):
        return kinds.get(stat.S_IFMT(st.st_mode), "a special file")
    if st.st_nlink != 1:
        return f"a file with {st.st_nlink} hard links"
    if st.st_uid != os.geteuid() and not st.st_mode & stat.S_IWOTH:
        return f"a file of uid {st.st_uid} not writable by everyone"
    return None


class LeaseFolder:
    """The folder of lock files; checked once per process (writable, and locks really exclude)."""

    def __init__(self, path: Path | str | None = None, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        explicit = path or env.get(ENV_LEASES)
        self.path = Path(explicit).expanduser() if explicit else default_lease_dir()
        self.is_default = not explicit

    def _hint(self) -> str:
        return f"; set {ENV_LEASES} to a writable folder on a local disk"

    def ensure(self) -> None:
        """Create and check the folder; raise LeaseFolderError with one clear line if unusable."""
        key = str(self.path)
        if key in _CHECKED_FOLDERS:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700 if self.is_default else 0o777)
        except FileExistsError:
            raise LeaseFolderError(
                f"the lease folder {self.path} is not a folder{self._hint()}"
            ) from None
        except OSError as e:
            raise LeaseFolderError(
                f"cannot create the lease folder {self.path}: {e.strerror}{self._hint()}"
            ) from None
        if self.is_default and self.path.is_symlink():
            raise LeaseFolderError(f"the lease folder {self.path} is a symlink{self._hint()}")
        if self.is_default and self.path.stat().st_uid != os.getuid():
            raise LeaseFolderError(
                f"the lease folder {self.path} belongs to another user{self._hint()}"
            )
        self._self_test()
        _CHECKED_FOLDERS.add(key)

    def _self_test(self) -> None:
        """Lock a scratch file through one descriptor and check that a second one cannot."""
        test = self.path / f".self-test.{os.getpid()}.{random.getrandbits(32):08x}"
        try:
            fd1 = os.open(test, os.O_RDWR | os.O_CREAT | os.O_EXCL | _SAFE_OPEN, 0o600)
        except OSError as e:
            raise LeaseFolderError(
                f"the lease folder {self.path} is not writable ({e.strerror}){self._hint()}"
            ) from None
        fd2 = -1
        try:
            fd2 = os.open(test, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.flock(fd1, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                raise _no_locks_error(self.path, f"flock: {e.strerror}") from None
            try:
                fcntl.flock(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pass  # what a working filesystem does
            except OSError as e:
                raise _no_locks_error(self.path, f"flock: {e.strerror}") from None
            else:
                raise _no_locks_error(self.path, "a second descriptor took a lock already held")
        finally:
            for fd in (fd1, fd2):
                if fd >= 0:
                    os.close(fd)
            with contextlib.suppress(OSError):
                test.unlink()

    def _open(self, path: Path) -> int:
        """Open (creating if needed) a lock file; never follows a symlink planted in the folder."""
        flags = os.O_RDWR | _SAFE_OPEN
        try:
            return os.open(path, flags)
        except FileNotFoundError:
            pass
        try:
            fd = os.open(path, flags | os.O_CREAT, 0o666)
        except PermissionError:  # created meanwhile by another user (fs.protected_regular)
            return os.open(path, flags)
        if not self.is_default:  # a folder shared between users: let the others lock it too
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o666)
        return fd

    def try_lock(self, name: str) -> int | None:
        """Take the exclusive lock on ``name`` without waiting; return its descriptor or None."""
        path = self.path / name
        for _ in range(3):
            try:
                fd = self._open(path)
            except OSError as e:
                if e.errno in _NOT_OURS_ERRNOS:  # a symlink, a folder, another user's file
                    self._skip(name, e.strerror or "cannot be opened")
                    return None
                raise LeaseFolderError(
                    f"cannot open the lock file {path}: {e.strerror}{self._hint()}"
                ) from None
            why = _not_a_lease(os.fstat(fd))  # of what was opened: no race with a swap
            if why is not None:
                os.close(fd)
                self._skip(name, why)
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            except OSError as e:
                os.close(fd)
                if e.errno in _NO_LOCK_ERRNOS:
                    raise _no_locks_error(self.path, f"flock: {e.strerror}") from None
                raise
            # The file could have been removed (a /tmp cleaner) between open and lock: a lock on
            # an unlinked file excludes nobody, so lock the file that is there now instead.
            try:
                if os.lstat(path).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
            os.close(fd)
        return None

    def _skip(self, name: str, why: str) -> None:
        """Warn once per file about something in the folder that is not a lease we can take."""
        key = str(self.path / name)
        if key not in _SKIPPED:
            _SKIPPED.add(key)
            print(
                f"warning: skipping {key} in the lease folder ({why}): not a lease file this "
                "user can lock; the other slots are leased as usual",
                file=sys.stderr,
                flush=True,
            )

    def junk(self, name: str) -> str | None:
        """Why what lies at ``name`` is no lease file of ours (it blocks that slot), or None.

        Only looked at, never opened: `status` must report a planted FIFO, not hang on it.
        """
        try:
            return _not_a_lease(os.lstat(self.path / name))
        except OSError:
            return None  # nothing there: the slot is free

    def _open_read(self, name: str) -> int | None:
        """A read descriptor on a regular lock file, or None: no symlink followed, no FIFO waited
        on (a planted FIFO would block an open for ever)."""
        try:
            fd = os.open(self.path / name, os.O_RDONLY | os.O_NONBLOCK | _SAFE_OPEN)
        except OSError:
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None
        return fd

    def is_held(self, name: str) -> bool:
        """Whether some process holds the lock on ``name`` (a shared probe, released at once)."""
        fd = self._open_read(name)
        if fd is None:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError as e:
            if e.errno in _NO_LOCK_ERRNOS:
                raise _no_locks_error(self.path, f"flock: {e.strerror}") from None
            raise
        finally:
            os.close(fd)
        return False

    def holder(self, name: str) -> dict[str, Any] | None:
        """What the holder wrote into the lock file (pid, run, since, ...), if anything."""
        fd = self._open_read(name)
        if fd is None:
            return None
        try:
            text = os.pread(fd, MAX_HOLDER_BYTES, 0).decode("utf-8")
            info = json.loads(text) if text.strip() else None
        except (OSError, ValueError, RecursionError):
            return None
        finally:
            os.close(fd)
        return info if isinstance(info, dict) else None

    def names(self, prefix: str) -> list[str]:
        try:
            return sorted(
                p.name
                for p in self.path.iterdir()
                if p.name.startswith(prefix) and p.name.endswith(".lock")
            )
        except OSError:
            return []


# ----- leases ------------------------------------------------------------------------------------


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
        return self.folder.path / self.name

    @property
    def held(self) -> bool:
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


def slot_file(uuid: str, slot: int) -> str:
    """The lock file of one GPU slot: named by UUID, so it does not depend on any ordering."""
    return f"gpu-{re.sub(r'[^A-Za-z0-9._-]', '_', uuid)}.slot{slot}.lock"


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


def _holder_info(run_name: str | None, **extra: Any) -> dict[str, Any]:
    now = time.time()
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "run": run_name or " ".join(sys.argv)[:200],
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
        "since_epoch": now,
        **extra,
    }


def _env_number(
    env: Mapping[str, str], key: str, default: float | None, low: float, high: float
) -> float | None:
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise UserError(f"{key} must be a number from {low:g} to {high:g}, got {raw!r}")
    return value + 0.0  # -0.0 -> 0.0, so that messages never say "-0s"


def check_number(name: str, value: float, low: float, high: float) -> float:
    """``value`` if it is a finite number from ``low`` to ``high``, else a one-line UserError
    (nan compares false with everything, so it must be refused, not compared)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not low <= number <= high:  # false for nan
        raise UserError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    return number + 0.0  # -0.0 -> 0.0, so that messages never say "-0s"


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


class GPUManager:
    """Leases GPUs to runs: picks a free GPU under the thresholds, waits when none is, and sets
    ``CUDA_VISIBLE_DEVICES``. Use one per run; keep the returned Lease for the whole run."""

    def __init__(
        self,
        inventory: GpuInventory | None = None,
        lease_dir: Path | str | None = None,
        *,
        slots_per_gpu: int | None = None,
        max_memory_percent: float | None = None,
        max_utilization_percent: float | None = None,
        poll_interval: float = 1.0,
        notice_every: float = 60.0,
        env: MutableMapping[str, str] | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.env = os.environ if env is None else env
        self.inventory = inventory if inventory is not None else inventory_from_env(self.env)
        self.folder = LeaseFolder(lease_dir, self.env)
        slots = (
            slots_per_gpu
            if slots_per_gpu is not None
            else _env_number(self.env, ENV_SLOTS, DEFAULT_SLOTS, 1, 64)
        )
        if slots != int(slots or 0) or not 1 <= int(slots or 0) <= 64:
            raise UserError(
                f"slots per GPU (--slots) must be a whole number from 1 to 64, got {slots}"
            )
        self.slots_per_gpu = int(slots or DEFAULT_SLOTS)
        self.max_memory_percent = (
            check_number("--max-memory", max_memory_percent, 0, 100)
            if max_memory_percent is not None
            else _env_number(self.env, ENV_MAX_MEMORY, DEFAULT_MAX_MEMORY, 0, 100)
        )
        self.max_utilization_percent = (
            check_number("--max-utilization", max_utilization_percent, 0, 100)
            if max_utilization_percent is not None
            else _env_number(self.env, ENV_MAX_UTILIZATION, DEFAULT_MAX_UTILIZATION, 0, 100)
        )
        self.poll_interval = check_number("--poll-interval", poll_interval, 0.001, 3600)
        self.notice_every = check_number("--notice-every", notice_every, 0, 1e9)
        self.stream = stream

    def _say(self, message: str) -> None:
        print(message, file=self.stream or sys.stderr, flush=True)

    def default_timeout(self) -> float | None:
        return _env_number(self.env, ENV_TIMEOUT, None, 0, 1e9)

    # -- what there is --------------------------------------------------------------------------
    def visible_gpus(self) -> list[GpuInfo]:
        """The GPUs this run may use: all, or those a CUDA_VISIBLE_DEVICES already set names."""
        return filter_visible(self.inventory.gpus(), self.env.get("CUDA_VISIBLE_DEVICES"))

    @staticmethod
    def slot_name(gpu: GpuInfo, slot: int) -> str:
        return slot_file(gpu.uuid, slot)

    def leased_slots(self, gpu: GpuInfo) -> int:
        return sum(self.folder.is_held(self.slot_name(gpu, k)) for k in range(self.slots_per_gpu))

    # -- leasing ----------------------------------------------------------------------------------
    def try_acquire(
        self, run_name: str | None = None, gpus: Sequence[GpuInfo] | None = None
    ) -> Lease | None:
        """One pass: lease a slot on the least loaded eligible GPU, or return None."""
        gpus = self.visible_gpus() if gpus is None else gpus
        self.folder.ensure()
        for gpu in self._eligible(gpus):
            for slot in range(self.slots_per_gpu):
                lease = self._lease_slot(gpu, slot, run_name)
                if lease is not None:
                    return lease
        return None

    def _eligible(self, gpus: Sequence[GpuInfo]) -> list[GpuInfo]:
        """GPUs with an unleased slot under the thresholds, least loaded first."""
        leased = {g.uuid: self.leased_slots(g) for g in gpus}
        return rank_gpus(
            gpus,
            leased,
            self.slots_per_gpu,
            self.max_memory_percent or 0.0,
            self.max_utilization_percent or 0.0,
        )

    def junk_slots(self, gpu: GpuInfo) -> list[str]:
        """``PATH (why)`` of each unheld slot of ``gpu`` that something not a lease file blocks."""
        out = []
        for slot in range(self.slots_per_gpu):
            name = self.slot_name(gpu, slot)
            why = self.folder.junk(name)
            if why is not None and not self.folder.is_held(name):
                out.append(f"{self.folder.path / name} ({why})")
        return out

    def _blocked_by_junk(self, gpus: Sequence[GpuInfo]) -> list[str]:
        """The junk in every slot the GPUs free under the thresholds have, when that is all of them
        ([] otherwise): then no wait ends until someone removes it, and the wait must say so."""
        junk: list[str] = []
        for gpu in self._eligible(gpus):
            paths = self.junk_slots(gpu)
            if self.leased_slots(gpu) + len(paths) < self.slots_per_gpu:
                return []  # a slot that is free, or that a run took meanwhile: not junk's doing
            junk += paths
        return junk

    def _warn_if_blocked(self, gpus: Sequence[GpuInfo]) -> bool:
        """Say once, naming the files, that junk blocks every free slot; True when it did."""
        junk = self._blocked_by_junk(gpus)
        if junk:
            self._say(
                "warning: every slot of the free GPUs is blocked by a file that is "
                f"{JUNK_HINT}: {', '.join(junk)}; waiting until they are removed"
            )
        return bool(junk)

    def _lease_slot(self, gpu: GpuInfo, slot: int, run_name: str | None) -> Lease | None:
        name = self.slot_name(gpu, slot)
        fd = self.folder.try_lock(name)
        if fd is None:
            return None
        info = _holder_info(run_name, gpu_uuid=gpu.uuid, gpu_index=gpu.index, slot=slot)
        return Lease(self.folder, name, fd, info, gpu=gpu, slot=slot)

    def acquire(
        self,
        run_name: str | None = None,
        timeout: float | None = -1.0,
        set_env: bool = True,
    ) -> Lease | None:
        """Lease a GPU, waiting (with a visible message) while none is free.

        Returns None, after one notice, when there is no driver or no visible GPU: the run goes on
        the CPU. ``timeout`` -1 means the environment's (default: wait as long as it takes).
        Raises GpuWaitTimeout when the timeout passes first.
        """
        if timeout is not None and timeout == -1.0:
            timeout = self.default_timeout()
        elif timeout is not None:
            timeout = check_number("the GPU wait timeout (--timeout)", timeout, 0, 1e9)
        try:
            gpus = self.visible_gpus()
        except NoGpuDriver as e:
            self._say(f"notice: no GPU available ({e}); running on the CPU")
            return None
        if not gpus:
            self._say(self.none_visible_notice())
            return None
        started = time.monotonic()
        next_notice = 0.0
        warned_junk = False
        while True:
            lease = self.try_acquire(run_name, gpus)
            waited = time.monotonic() - started
            if lease is not None:
                if next_notice > 0:
                    self._say(f"leased {self.describe(lease)} after waiting {waited:.0f}s")
                if set_env:
                    self.apply_env(lease)
                return lease
            warned_junk = warned_junk or self._warn_if_blocked(gpus)
            if timeout is not None and waited >= timeout:
                raise GpuWaitTimeout(
                    f"no GPU became free within {timeout:g}s ({self._busy_reasons(gpus)}); "
                    f"raise {ENV_TIMEOUT} or see `{STATUS_COMMAND}`"
                )
            if waited >= next_notice:
                first = next_notice == 0
                took = f"{waited:.1f}s" if waited < 10 else f"{waited:.0f}s"
                prefix = "waiting for a GPU" if first else f"still waiting for a GPU ({took})"
                limit = f"; timeout {timeout:g}s" if first and timeout is not None else ""
                self._say(f"{prefix}: {self._busy_reasons(gpus)}{limit}; see `{STATUS_COMMAND}`")
                next_notice = max(waited, 1e-9) + self.notice_every
            pause = self.poll_interval * random.uniform(0.8, 1.2)
            if timeout is not None:
                pause = max(0.0, min(pause, timeout - waited))
            time.sleep(pause)
            with contextlib.suppress(NoGpuDriver):
                gpus = self.visible_gpus()  # fresh memory and utilization figures

    def lease_gpu(self, gpu: GpuInfo, run_name: str | None = None) -> Lease | None:
        """Lease a slot on this GPU without waiting (for ``--gpu=N``); None when all are taken."""
        self.folder.ensure()
        for slot in range(self.slots_per_gpu):
            lease = self._lease_slot(gpu, slot, run_name)
            if lease is not None:
                return lease
        return None

    def pin(self, gpu: GpuInfo, lease: Lease | None = None) -> None:
        """Make ``gpu`` the only CUDA device of this process (and of what it starts)."""
        self.env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        self.env["CUDA_VISIBLE_DEVICES"] = gpu.uuid
        if lease is not None:
            self.env[ENV_LEASE_INFO] = f"{gpu.uuid} slot {lease.slot}"

    def apply_env(self, lease: Lease) -> None:
        if lease.gpu is not None:
            self.pin(lease.gpu, lease)

    # -- messages ---------------------------------------------------------------------------------
    def describe(self, lease: Lease) -> str:
        gpu = lease.gpu
        if gpu is None:
            return lease.name
        return f"GPU {gpu.index} ({gpu.uuid}) slot {lease.slot}"

    def none_visible_notice(self) -> str:
        cvd = self.env.get("CUDA_VISIBLE_DEVICES")
        why = f"CUDA_VISIBLE_DEVICES={cvd!r} names no GPU" if cvd is not None else "no GPU found"
        return f"notice: no GPU available ({why}); running on the CPU"

    def holders(self, gpu: GpuInfo) -> list[dict[str, Any]]:
        out = []
        for slot in range(self.slots_per_gpu):
            name = self.slot_name(gpu, slot)
            if self.folder.is_held(name):
                out.append({"slot": slot, **(self.folder.holder(name) or {})})
        return out

    def _busy_reasons(self, gpus: Sequence[GpuInfo]) -> str:
        parts = []
        for g in gpus:
            holders = self.holders(g)
            if len(holders) >= self.slots_per_gpu:
                who = ", ".join(f"pid {h.get('pid', '?')} {h.get('run', '?')!r}" for h in holders)
                parts.append(f"GPU {g.index} leased by {who}")
            elif g.memory_percent > (self.max_memory_percent or 0):
                parts.append(
                    f"GPU {g.index} memory {g.memory_percent:.0f}% used "
                    f"> {self.max_memory_percent:g}%"
                )
            elif not holders and g.utilization_percent > (self.max_utilization_percent or 0):
                parts.append(
                    f"GPU {g.index} utilization {g.utilization_percent:.0f}% "
                    f"> {self.max_utilization_percent:g}%"
                )
            elif len(holders) + len(self.junk_slots(g)) >= self.slots_per_gpu:
                parts.append(f"GPU {g.index} blocked by files that are not lease files")
            else:
                parts.append(f"GPU {g.index} free")
        return "; ".join(parts)

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """GPUs, their slots and holders, CPU runs, as a dict (``status --json`` prints it)."""
        report: dict[str, Any] = {
            "lease_dir": str(self.folder.path),
            "slots_per_gpu": self.slots_per_gpu,
            "max_memory_percent": self.max_memory_percent,
            "max_utilization_percent": self.max_utilization_percent,
            "cuda_visible_devices": self.env.get("CUDA_VISIBLE_DEVICES"),
            "driver": None,
            "gpus": [],
            "other_leases": [],
            "cpu_runs": [],
        }
        try:
            gpus = self.inventory.gpus()
        except NoGpuDriver as e:
            report["driver"] = str(e)
            gpus = []
        visible = {g.uuid for g in filter_visible(gpus, self.env.get("CUDA_VISIBLE_DEVICES"))}
        seen: set[str] = set()
        for g in gpus:
            prefix = self.slot_name(g, 0).rsplit(".slot", 1)[0] + ".slot"
            suffixes = [n[len(prefix) : -len(".lock")] for n in self.folder.names(prefix)]
            present = [int(x) for x in suffixes if x.isdigit()]
            slots = []
            for slot in range(max([self.slots_per_gpu, *(k + 1 for k in present)])):
                name = self.slot_name(g, slot)
                seen.add(name)
                held = self.folder.is_held(name)
                slots.append(
                    {
                        "slot": slot,
                        "held": held,
                        "holder": self.folder.holder(name) if held else None,
                        "blocked": None if held else self.folder.junk(name),
                    }
                )
            report["gpus"].append({**asdict(g), "visible": g.uuid in visible, "slots": slots})
        for name in self.folder.names("gpu-"):
            if name not in seen and self.folder.is_held(name):
                report["other_leases"].append({"file": name, "holder": self.folder.holder(name)})
        for name in self.folder.names(CPU_RUN_PREFIX):
            if self.folder.is_held(name):
                report["cpu_runs"].append({"file": name, "holder": self.folder.holder(name)})
        return report


def _ago(info: Mapping[str, Any] | None) -> str:
    if not info or "since_epoch" not in info:
        return ""
    seconds = max(0, int(time.time() - float(info["since_epoch"])))
    text = f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else ""
    return text or (f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")


def _holder_text(info: Mapping[str, Any] | None) -> str:
    if not info:
        return "held (holder details not written yet)"
    alive = "" if _pid_alive(info.get("pid")) else " (pid not on this host)"
    return (
        f"pid {info.get('pid', '?')}{alive} {info.get('run', '?')!r} "
        f"since {info.get('since', '?')} ({_ago(info)})"
    )


def format_status(report: Mapping[str, Any]) -> str:
    """The status report as a few readable lines."""
    lines = [
        f"lease folder: {report['lease_dir']}   slots per GPU: {report['slots_per_gpu']}   "
        f"skip GPUs over {report['max_memory_percent']:g}% memory or (unleased) "
        f"{report['max_utilization_percent']:g}% utilization"
    ]
    if report.get("cuda_visible_devices") is not None:
        lines.append(f"CUDA_VISIBLE_DEVICES={report['cuda_visible_devices']!r} (only those leased)")
    if report["driver"]:
        lines.append(f"no NVIDIA GPU: {report['driver']}")
    for g in report["gpus"]:
        free = (g["memory_total_mib"] - g["memory_used_mib"]) / 1024
        hidden = "" if g["visible"] else "  (not in CUDA_VISIBLE_DEVICES)"
        used = 100 * g["memory_used_mib"] / g["memory_total_mib"] if g["memory_total_mib"] else 0
        if used > report["max_memory_percent"]:
            hidden += "  (memory over the threshold: not leased)"
        lines.append(
            f"GPU {g['index']}  {g['uuid']}  {g['name']}  memory {g['memory_used_mib'] / 1024:.1f}"
            f"/{g['memory_total_mib'] / 1024:.1f} GiB used, {free:.1f} GiB free  "
            f"utilization {g['utilization_percent']:.0f}%{hidden}"
        )
        for s in g["slots"]:
            state = _holder_text(s["holder"]) if s["held"] else "free"
            if s.get("blocked"):
                path = Path(report["lease_dir"]) / slot_file(g["uuid"], s["slot"])
                state = f"blocked: {path} is {s['blocked']}, {JUNK_HINT}"
            lines.append(f"    slot {s['slot']}: {state}")
    for other in report["other_leases"]:
        lines.append(f"lease on a GPU not present here: {other['file']}: ")
        lines[-1] += _holder_text(other["holder"])
    if report["cpu_runs"]:
        lines.append(f"runs sharing the CPU: {len(report['cpu_runs'])}")
        for run in report["cpu_runs"]:
            threads = (run["holder"] or {}).get("threads")
            extra = f", {threads} threads" if threads else ""
            lines.append(f"    {_holder_text(run['holder'])}{extra}")
    else:
        lines.append("runs sharing the CPU: none")
    return "\n".join(lines)


# ----- command line ------------------------------------------------------------------------------


def _manager_from_args(args: argparse.Namespace) -> GPUManager:
    return GPUManager(
        lease_dir=args.lease_dir,
        slots_per_gpu=getattr(args, "slots", None),
        max_memory_percent=getattr(args, "max_memory", None),
        max_utilization_percent=getattr(args, "max_utilization", None),
        poll_interval=getattr(args, "poll_interval", 1.0),
        notice_every=getattr(args, "notice_every", 60.0),
    )


def main(argv: list[str] | None = None) -> int:
    """``status`` lists GPUs, leases and holders; ``run -- CMD`` runs CMD on a leased GPU."""
    parser = one_line_parser(
        prog="python -m text_recognizer.experiment.gpu_manager",
        description="GPU leases: one exclusive file lock per GPU slot, held for a whole run.",
    )
    parser.add_argument(
        "--lease-dir", help=f"lease folder (default ${ENV_LEASES} or {default_lease_dir()})"
    )
    parser.add_argument("--slots", type=int, help=f"runs per GPU (default ${ENV_SLOTS} or 1)")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="GPUs, leases, holders and free memory")
    status.add_argument("--json", action="store_true", help="print the report as JSON")
    run = sub.add_parser(
        "run",
        help="lease a GPU, then run a command on it (the lease lasts as long as the command)",
        description="Example: ... run -- wandb agent ENTITY/PROJECT/SWEEP",
    )
    run.add_argument("--timeout", type=float, help=f"seconds to wait (default ${ENV_TIMEOUT})")
    run.add_argument("--run-name", help="shown by `status` (default: the command)")
    run.add_argument(
        "--max-memory", type=float, help="%% memory in use above which a GPU is skipped"
    )
    run.add_argument(
        "--max-utilization", type=float, help="%% utilization above which it is skipped"
    )
    run.add_argument("--poll-interval", type=float, default=1.0, help=argparse.SUPPRESS)
    run.add_argument("--notice-every", type=float, default=60.0, help=argparse.SUPPRESS)
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args(argv)
    try:
        manager = _manager_from_args(args)
        if args.command == "status":
            report = manager.status()
            print(json.dumps(report, indent=2) if args.json else format_status(report))
            return 0
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            raise UserError("run needs a command after --, e.g. `run -- python train.py`")
        timeout = -1.0
        if args.timeout is not None:  # checked here: -1 means "the environment's" only inside
            timeout = check_number("--timeout", args.timeout, 0, 1e9)
        lease = _wait_for_lease(manager, args.run_name or shlex.join(cmd)[:200], timeout)
        if lease is not None:
            assert lease.fd is not None
            os.set_inheritable(lease.fd, True)  # the command holds the lock after exec
            print(f"leased {manager.describe(lease)}", file=sys.stderr, flush=True)
        try:
            os.execvp(cmd[0], cmd)
        except OSError as e:
            raise UserError(f"cannot run {cmd[0]!r}: {e.strerror}") from None
    except UserError as e:
        return print_error(e)
    except WaitInterrupted as e:
        print(e, file=sys.stderr, flush=True)
        return e.exit_code
    return 0


def _wait_for_lease(manager: GPUManager, run_name: str, timeout: float) -> Lease | None:
    """``acquire`` for ``run``, with SIGTERM handled as Ctrl-C is: a wait that may last hours is
    often ended by either, and each must end it with one line and exit 130, not a traceback or a
    silent 143. The handler is ours only while waiting: exec hands the command the defaults."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        return manager.acquire(run_name, timeout=timeout)
    except KeyboardInterrupt:
        raise WaitInterrupted(
            "interrupted while waiting for a GPU; the command was not run"
        ) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
