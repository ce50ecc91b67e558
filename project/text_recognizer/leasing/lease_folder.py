"""The lease folder: lock files that one user's runs (or several users') lock to share a machine.

Why OS file locks: the kernel drops an ``flock`` when the process that took it ends, however it ends
(exit, exception, kill -9, the OOM killer), so a lease can never outlive its run, two runs can never
hold the same slot, and there is no server to run and nothing to clean up. (FSDL's manager held a
Redis lock for five seconds, so two runs could share a GPU.)

This module is only the folder and its files: where it is, whether its locks work, taking a lock
without following what someone planted in a shared folder, and reading what a holder wrote. What a
held lock means (a GPU slot, a CPU share) is :mod:`~text_recognizer.leasing.leases`' business.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import random
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from text_recognizer import progress
from text_recognizer.errors import LeaseFolderError

ENV_LEASES = "TEXT_RECOGNIZER_GPU_LEASES"
MAX_HOLDER_BYTES = 64 * 1024
JUNK_HINT = "not a lease file of ours; its owner or an admin must remove it"

_NO_LOCK_ERRNOS = {
    errno.ENOLCK,
    errno.EOPNOTSUPP,
    errno.ENOSYS,
    errno.EINVAL,
    getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
}
_CHECKED_FOLDERS: set[str] = set()
_SKIPPED: set[str] = set()
_SAFE_OPEN = os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
# open() errors that mean "this file is not ours to lock": skip it, lease the others.
_NOT_OURS_ERRNOS = {errno.ELOOP, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENXIO}


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

    def _open_lease_file(self, name: str) -> int | None:
        """A write descriptor on the lease file ``name``, or None (with one warning) when what is
        there is not a lease file we may lock: checked on what was opened, so no race with a swap."""
        path = self.path / name
        try:
            fd = self._open(path)
        except OSError as e:
            if e.errno in _NOT_OURS_ERRNOS:  # a symlink, a folder, another user's file
                self._skip(name, e.strerror or "cannot be opened")
                return None
            raise LeaseFolderError(
                f"cannot open the lock file {path}: {e.strerror}{self._hint()}"
            ) from None
        why = _not_a_lease(os.fstat(fd))
        if why is not None:
            os.close(fd)
            self._skip(name, why)
            return None
        return fd

    def try_lock(self, name: str) -> int | None:
        """Take the exclusive lock on ``name`` without waiting; return its descriptor or None."""
        path = self.path / name
        for _ in range(3):
            fd = self._open_lease_file(name)
            if fd is None:
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
            progress.line(
                f"warning: skipping {key} in the lease folder ({why}): not a lease file this "
                "user can lock; the other slots are leased as usual"
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
        """The lock files whose names start with ``prefix``, sorted (none when unreadable)."""
        try:
            return sorted(
                p.name
                for p in self.path.iterdir()
                if p.name.startswith(prefix) and p.name.endswith(".lock")
            )
        except OSError:
            return []
