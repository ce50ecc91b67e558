"""Errors a user can fix. The command-line scripts turn them into one line and exit code 2.

The rules for untrusted input, full disks and killed processes: docs/untrusted-input.md.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn


def one_line(text: object, limit: int | None = None) -> str:
    """Collapse whitespace, so a message built from file contents or server replies stays one line;
    with ``limit``, cut it to that many characters (ending in "...")."""
    line = " ".join(str(text).split())
    if limit is None or len(line) <= limit:
        return line
    return line[: max(limit - 3, 0)] + "..."


class UserError(Exception):
    """Bad input from the user: config, command line or data layout. Printed as one line, exit 2."""

    exit_code = 2


class ConfigError(UserError):
    """The experiment config is malformed or inconsistent."""


class DataError(UserError):
    """Raw data is missing, malformed or failed verification."""


def print_error(error: UserError) -> int:
    """Print a user error as the one ``error: ...`` line the commands show; return its exit code.

    The message is folded to one line here, whatever it quotes (a library's multi-line error, an
    HTML page a server sent), so no caller can break the one-line contract.
    """
    print(f"error: {one_line(error)}", file=sys.stderr)
    return error.exit_code


class StorageError(UserError):
    """A file or folder could not be written or read: disk full, read-only folder, no permission.

    Before a run starts it is bad input like any other (exit 2); a run that hits it while running is
    recorded ``failed`` where the disk still allows and exits 1, with this one line.
    """


_STORAGE_REASONS = {
    errno.ENOSPC: "the disk is full; free some space and run again",
    errno.EDQUOT: "the disk quota is exceeded; free some space and run again",
    errno.EROFS: "the filesystem is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EFBIG: "the file is too large for this filesystem or limit",
}


def storage_error(exc: OSError, path: object, doing: str = "write") -> StorageError:
    """A one-line StorageError for an OSError met while ``doing`` something to ``path``."""
    reason = _STORAGE_REASONS.get(exc.errno or 0, exc.strerror or str(exc))
    return StorageError(one_line(f"cannot {doing} {path}: {reason}"))


class RunFailed(Exception):
    """A run that started but failed while running (exit 1, recorded in summary.json)."""

    exit_code = 1


def storage_cause(exc: BaseException | None) -> OSError | None:
    """The OSError that `storage_error` can explain (disk full, read-only, ...) behind ``exc``.

    Libraries wrap it: torch.save turns ENOSPC into a RuntimeError raised while handling it.
    """
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in _STORAGE_REASONS:
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def one_line_parser(**kwargs: object) -> argparse.ArgumentParser:
    """An ArgumentParser whose bad-usage message is the one ``error: ...`` line (exit 2), not
    argparse's usage block: the same contract as every other bad input."""

    class _Parser(argparse.ArgumentParser):
        def error(self, message: str) -> NoReturn:
            print(f"error: {one_line(message)} (see {self.prog} --help)", file=sys.stderr)
            raise SystemExit(2)

    return _Parser(**kwargs)  # type: ignore[arg-type]


def out_of_memory(exc: BaseException) -> bool:
    """Python's MemoryError, or torch's allocator failing (CPU or CUDA), without importing torch."""
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)
    return type(exc).__name__ == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError)
        and ("can't allocate memory" in text or "out of memory" in text.lower())
    )


PIPE_CLOSED_EXIT = 141  # 128 + SIGPIPE: what a shell reports for a tool its closed pipe ended


def stdout_to_devnull() -> None:
    """After the reader of stdout has gone (``| head``): point stdout at /dev/null, so Python's own
    flush at exit cannot fail again ("Exception ignored ... BrokenPipeError", exit 120). The
    remedy of the Python docs, signal module, "Note on SIGPIPE"."""
    import os

    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def command(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a command's entry point (console script, ``python -m``, training/*.py): its output
    piped into a reader that has gone (``| head -1``) ends it quietly, exit 141, as other Unix
    tools do; never a BrokenPipeError traceback, nor Python's complaint when it flushes stdout at
    exit (stdout is flushed here, inside, where the error can be caught)."""

    @functools.wraps(main)
    def entry(*args: object, **kwargs: object) -> int:
        try:
            try:
                code = main(*args, **kwargs)
            except SystemExit:  # argparse's --help and usage errors: flushed the same way
                sys.stdout.flush()
                raise
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            stdout_to_devnull()
            return PIPE_CLOSED_EXIT

    return entry


def run_command(
    work: Callable[[], int], memory_hint: str = "use a machine with more memory"
) -> int:
    """Run a command's work under the exit-code contract: a UserError is its one line (exit 2),
    running out of memory one line (exit 1), Ctrl-C exit 130, a closed output pipe (``| head``)
    exit 141 in silence, as other Unix tools do; never a traceback for these."""
    try:
        code = work()
        sys.stdout.flush()  # a closed pipe shows here, not in Python's flush at exit
        return code
    except UserError as e:
        return print_error(e)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        stdout_to_devnull()
        return PIPE_CLOSED_EXIT
    except Exception as e:
        if not out_of_memory(e):
            raise
        print(f"error: out of memory ({one_line(e)[:120]}); {memory_hint}", file=sys.stderr)
        return 1


# ----- the errors of each area, here so that every module imports them from one place -----


class ImageError(UserError):
    """An input that is not a usable image (unreadable, empty, wrong shape)."""


class ExportError(UserError):
    """A network that cannot be exported to ONNX, or whose export does not match torch: one
    line, exit 2, and nothing written."""


class MetadataError(DataError):
    """A metadata.toml is missing, malformed, or lacks a required key."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class DownloadError(DataError):
    """A file could not be fetched from any of its URLs."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class ChecksumMismatchError(DownloadError):
    """The downloaded bytes do not have the sha256 (or size) the metadata promises."""


class NoNetworkError(DownloadError):
    """No URL could even be connected to: the user has to fetch the files by hand.

    ``places`` lists every file to place as (folder, name, "'name' from URL or URL"), so the errors
    of several downloads (several datasets) merge into one that names them all."""

    def __init__(
        self,
        message: str,
        *,
        filenames: Sequence[str] = (),
        folder: Path | None = None,
        reason: str = "",
        places: Sequence[tuple[Path, str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.filenames = list(filenames)
        self.folder = folder
        self.reason = reason
        self.places = list(places)


class ArchiveError(DataError):
    """An archive is corrupt or of an unsupported kind."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class UnsafeArchiveError(ArchiveError):
    """An archive member is not allowed: outside the folder, a link, a device, or too large."""


class CheckpointError(UserError):
    """No readable checkpoint to resume from (exit 2)."""


class SweepError(UserError):
    """A sweep YAML or a state folder that cannot be used: one line, exit 2, before any trial."""


class SlurmError(UserError):
    """Slurm cannot take the work (no sbatch, a refused submission, a bad partition or limit)."""


class SlurmTaskFailed(Exception):
    """A run inside a Slurm task exited non-zero: raised there so Slurm and submitit record the
    task as failed (its ``exit_code`` is the run's)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (str(self), self.exit_code))


class LeaseFolderError(UserError):
    """The lease folder cannot be created, written or locked in: a one-line error, exit 2."""


class GpuWaitTimeout(UserError):
    """No GPU became free within the timeout: a one-line error, exit 2 (the run never started)."""


class WaitInterrupted(Exception):
    """Ctrl-C or SIGTERM while ``run`` waits for a GPU: one line, exit 130 (as an interrupted run),
    no traceback; the command never started, so there is nothing else to report."""

    exit_code = 130


class NoGpuDriver(Exception):
    """NVML cannot be used (no driver, no library, no permission): runs go on the CPU."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT during a run: recorded as ``interrupted``."""
