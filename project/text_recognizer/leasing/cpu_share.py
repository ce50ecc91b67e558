"""Share the CPU cores between runs started side by side, so that they do not oversubscribe them.

torch takes every core by default, so N runs side by side would start N times as many threads as
there are cores and each would run slower than alone. Each run therefore holds a ``cpu-run.N.lock``
in the GPU lease folder (:mod:`~text_recognizer.leasing.lease_folder`) for its lifetime: the held
locks count the runs sharing the machine, and GNU parallel's ``-j`` counts them before they have all
started.

    TEXT_RECOGNIZER_FAIR_THREADS   0: do not share CPU threads between side-by-side runs
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from text_recognizer import progress
from text_recognizer.errors import UserError
from text_recognizer.leasing.lease_folder import LeaseFolder
from text_recognizer.leasing.leases import CPU_RUN_PREFIX, Lease, holder_info
from text_recognizer.leasing.slurm_job import slurm_cpus

ENV_FAIR_THREADS = "TEXT_RECOGNIZER_FAIR_THREADS"


def usable_cores() -> int:
    """Cores this process may run on (taskset and cpusets included)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parse_parallel_jobs(argv: Sequence[str], cores: int) -> int | None:
    """GNU parallel's number of simultaneous jobs from its arguments (``-j``/``--jobs``/``-P``).

    Understands N, N%, +N and -N; no -j means one job per core (parallel's default). Returns None
    when the value cannot be read (a file name, 0 = as many as possible).
    """
    value: str | None = None
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        for flag in ("--jobs", "--max-procs", "-j", "-P"):
            if arg == flag and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(flag + "=") and flag.startswith("--"):
                value = arg[len(flag) + 1 :]
            elif not flag.startswith("--") and arg.startswith(flag) and len(arg) > 2:
                value = arg[2:]
        if arg in (":::", "::::", ":::+", "::::+"):
            break
    if value is None:
        return cores
    value = value.strip()
    try:
        if value.endswith("%"):
            return max(1, int(float(value[:-1]) * cores / 100))
        if value.startswith("+"):
            return max(1, cores + int(value[1:]))
        if value.startswith("-"):
            return max(1, cores - int(value[1:]))
        jobs = int(value)
    except ValueError:
        return None
    return jobs if jobs > 0 else None  # 0: as many as possible, unknown here


def _cmdline(pid: int) -> list[str] | None:
    """A process's arguments from /proc (None when gone or not ours to read)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def parallel_jobs(env: Mapping[str, str] | None = None) -> int | None:
    """How many runs GNU parallel starts side by side, when this run was started by it.

    GNU parallel exports ``PARALLEL_PID`` to its jobs; its command line (and ``$PARALLEL``, where
    options can also be given) says ``-j``. None when not under parallel (or on a remote host).
    """
    env = os.environ if env is None else env
    pid = env.get("PARALLEL_PID")
    if not pid or not pid.isdigit():
        return None
    argv = _cmdline(int(pid))
    if not argv:
        return None
    names = [Path(a).name for a in argv[:2]]
    if "parallel" not in names:
        return None
    args = argv[names.index("parallel") + 1 :]
    options = shlex.split(env.get("PARALLEL", ""))
    cores = usable_cores()
    if any(a.startswith(("-j", "-P", "--jobs", "--max-procs")) for a in args):
        return parse_parallel_jobs(args, cores)
    return parse_parallel_jobs(options, cores)


def fair_num_threads(cores: int, jobs: int) -> int:
    """Threads per run so that ``jobs`` runs side by side use ``cores`` cores, at least one."""
    return max(1, cores // max(1, jobs))


def _off(value: str | None) -> bool:
    return (value or "").strip().lower() in ("0", "false", "off", "no")


@dataclass
class CpuShare:
    """What ``share_cpu`` decided: the thread count to set (None: leave torch's) and why."""

    threads: int | None
    reason: str
    lease: Lease | None = None
    runs_side_by_side: int = 1


def share_cpu(
    requested: int | None,
    run_name: str | None = None,
    lease_dir: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    cores: int | None = None,
) -> CpuShare:
    """Decide this run's torch thread count so that runs side by side don't oversubscribe the CPU.

    Every run holds a ``cpu-run.N.lock`` for its lifetime; a run that does not set
    ``train_args.num_threads`` (or OMP_NUM_THREADS) takes cores / (runs side by side), where runs
    side by side is GNU parallel's -j when started by parallel, else the number of cpu-run locks
    held right now. Under Slurm (``SLURM_CPUS_PER_TASK`` set) it takes ``--cpus-per-task``
    threads and holds no lock: Slurm has split the node already. Best effort: a broken lease
    folder only costs the sharing, never the run.
    """
    env = os.environ if env is None else env
    cores = cores or usable_cores()
    if slurm_cpus(env) is not None:  # Slurm split the node: nothing to count or share here
        return _decide_threads(requested, env, cores, None, 1)
    folder = LeaseFolder(lease_dir, env)
    lease: Lease | None = None
    active = 1
    try:
        folder.ensure()
        for k in range(4096):
            name = f"{CPU_RUN_PREFIX}{k}.lock"
            fd = folder.try_lock(name)
            if fd is not None:
                lease = Lease(folder, name, fd, holder_info(run_name, slot=k))
                break
        active = max(1, sum(folder.is_held(n) for n in folder.names(CPU_RUN_PREFIX)))
    except (UserError, OSError) as e:
        progress.line(f"warning: runs side by side will not share the CPU cores ({e})")
    decision = _decide_threads(requested, env, cores, parallel_jobs(env), active)
    decision.lease = lease
    if lease is not None:
        lease.update(threads=decision.threads)
    return decision


def _decide_threads(
    requested: int | None, env: Mapping[str, str], cores: int, hint: int | None, active: int
) -> CpuShare:
    """The decision alone, apart from the locks, so it can be tested as a plain function: the
    run's own setting wins, then the switches, then cores / max(parallel's -j, runs holding)."""
    if requested:
        return CpuShare(requested, "train_args.num_threads", runs_side_by_side=active)
    slurm = slurm_cpus(env)
    if slurm is not None:  # the allocation, over an OMP_NUM_THREADS exported from the login node
        return CpuShare(slurm, f"Slurm --cpus-per-task={slurm}", runs_side_by_side=1)
    if _off(env.get(ENV_FAIR_THREADS, "1")):
        return CpuShare(None, f"{ENV_FAIR_THREADS}=0", runs_side_by_side=active)
    if env.get("OMP_NUM_THREADS"):
        return CpuShare(None, "OMP_NUM_THREADS", runs_side_by_side=active)
    jobs = max(hint or 1, active)
    if jobs <= 1:
        return CpuShare(None, "alone", runs_side_by_side=1)
    source = f"GNU parallel -j{hint}" if hint and hint >= active else f"{active} runs holding"
    return CpuShare(
        fair_num_threads(cores, jobs),
        f"{cores} cores / {jobs} runs side by side ({source})",
        runs_side_by_side=jobs,
    )
