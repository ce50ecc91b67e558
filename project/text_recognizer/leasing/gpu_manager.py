"""The ``gpu_manager`` command: ``status`` shows GPUs, leases and holders; ``run`` runs any command
on a leased GPU, holding the lease for as long as the command runs.

    python -m text_recognizer.leasing.gpu_manager status          # GPUs, leases, holders
    python -m text_recognizer.leasing.gpu_manager run -- CMD ...   # any command on a leased GPU

Only the command line and the words it prints live here; the decisions are the GPUManager's
(:mod:`~text_recognizer.leasing.manager`), whose docstring lists the settings. The module keeps the
name ``gpu_manager`` because that is the command users type.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from text_recognizer import progress
from text_recognizer.errors import (
    UserError,
    WaitInterrupted,
    command,
    one_line_parser,
    print_error,
)
from text_recognizer.leasing.lease_folder import ENV_LEASES, JUNK_HINT, default_lease_dir
from text_recognizer.leasing.leases import Lease, pid_alive, slot_file
from text_recognizer.leasing.manager import (
    ENV_SLOTS,
    ENV_TIMEOUT,
    GPUManager,
    check_number,
)


def _ago(info: Mapping[str, Any] | None) -> str:
    """How long a holder has held its lease (``3m12s``), from the time it wrote; "" if unknown."""
    if not info or "since_epoch" not in info:
        return ""
    seconds = max(0, int(time.time() - float(info["since_epoch"])))
    text = f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else ""
    return text or (f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")


def _holder_text(info: Mapping[str, Any] | None) -> str:
    """Who holds a lease, flagging a pid this host does not run (another host, a handed-on lock)."""
    if not info:
        return "held (holder details not written yet)"
    alive = "" if pid_alive(info.get("pid")) else " (pid not on this host)"
    return (
        f"pid {info.get('pid', '?')}{alive} {info.get('run', '?')!r} "
        f"since {info.get('since', '?')} ({_ago(info)})"
    )


def _gpu_lines(report: Mapping[str, Any], g: Mapping[str, Any]) -> list[str]:
    """One GPU of the report: its load, then one line per slot (holder, free or blocked)."""
    free = (g["memory_total_mib"] - g["memory_used_mib"]) / 1024
    hidden = "" if g["visible"] else "  (not in CUDA_VISIBLE_DEVICES)"
    used = 100 * g["memory_used_mib"] / g["memory_total_mib"] if g["memory_total_mib"] else 0
    if used > report["max_memory_percent"]:
        hidden += "  (memory over the threshold: not leased)"
    lines = [
        f"GPU {g['index']}  {g['uuid']}  {g['name']}  memory {g['memory_used_mib'] / 1024:.1f}"
        f"/{g['memory_total_mib'] / 1024:.1f} GiB used, {free:.1f} GiB free  "
        f"utilization {g['utilization_percent']:.0f}%{hidden}"
    ]
    for s in g["slots"]:
        state = _holder_text(s["holder"]) if s["held"] else "free"
        if s.get("blocked"):
            path = Path(report["lease_dir"]) / slot_file(g["uuid"], s["slot"])
            state = f"blocked: {path} is {s['blocked']}, {JUNK_HINT}"
        lines.append(f"    slot {s['slot']}: {state}")
    return lines


def format_status(report: Mapping[str, Any]) -> str:
    """The status report (``GPUManager.status``) as a few readable lines."""
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
        lines += _gpu_lines(report, g)
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


def _parser() -> argparse.ArgumentParser:
    """The ``status`` and ``run`` subcommands; bad usage is one ``error:`` line, exit 2."""
    parser = one_line_parser(
        prog="python -m text_recognizer.leasing.gpu_manager",
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
    return parser


def _manager_from_args(args: argparse.Namespace) -> GPUManager:
    """The manager the flags ask for (``status`` has no thresholds: the environment's apply)."""
    return GPUManager(
        lease_dir=args.lease_dir,
        slots_per_gpu=getattr(args, "slots", None),
        max_memory_percent=getattr(args, "max_memory", None),
        max_utilization_percent=getattr(args, "max_utilization", None),
        poll_interval=getattr(args, "poll_interval", 1.0),
        notice_every=getattr(args, "notice_every", 60.0),
    )


@command
def main(argv: list[str] | None = None) -> int:
    """``status`` lists GPUs, leases and holders; ``run -- CMD`` runs CMD on a leased GPU."""
    args = _parser().parse_args(argv)
    try:
        manager = _manager_from_args(args)
        if args.command == "status":
            report = manager.status()
            print(json.dumps(report, indent=2) if args.json else format_status(report))
            return 0
        _run(manager, args)
    except UserError as e:
        return print_error(e)
    except WaitInterrupted as e:
        print(e, file=sys.stderr, flush=True)  # an outcome, as print_error's lines are
        return e.exit_code
    return 0


def _run(manager: GPUManager, args: argparse.Namespace) -> None:
    """Lease a GPU, then exec the command with the lock's descriptor open: the command holds the
    lease for as long as it runs, and nothing of ours stays behind to hold it longer."""
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
        progress.line(f"leased {manager.describe(lease)}")
    sys.stderr.flush()  # exec drops what Python has not written yet
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        raise UserError(f"cannot run {cmd[0]!r}: {e.strerror}") from None


def _wait_for_lease(manager: GPUManager, run_name: str, timeout: float) -> Lease | None:
    """``acquire`` for ``run``, with SIGTERM handled as Ctrl-C is: a wait that may last hours is
    often ended by either, and each must end it with one line and exit 130, not a traceback or a
    silent 143. The handler is ours only while waiting: exec hands the command the defaults."""

    def interrupt(signum: int, frame: Any) -> None:
        """SIGTERM as Ctrl-C, so one except clause ends the wait for both."""
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
