"""Experiments as one Slurm job array, through submitit: submit, say how to watch, optionally wait.

    python training/prepare_experiments.py FILE --slurm [--partition P] [--gpus-per-run N]
        [--cpus-per-run N] [--mem M] [--time MINUTES] [--array-parallelism K] [--wait]

submitit (Meta's maintained launcher) writes the sbatch script, pickles one task per experiment
and submits them as ONE job array (one ``sbatch`` call, however many experiments), and brings
the checkpoint-and-requeue protocol for time limits and preemption (``slurm_task.SlurmTask``).
Each task runs the command ``prepare_experiments`` prints for GNU parallel, so a run under Slurm
is the same run. Slurm's logs (submitit's folder) go beside the run records:
``runs/<group>/slurm/<job id>_<task>/<job id>_<task>_0_log.out``. With ``--wait`` it waits for
the array and ends with the ``compare_runs`` table and, as GNU parallel does, the number of failed
runs as its exit status (101 for more than 100).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text_recognizer import paths, progress
from text_recognizer.errors import SlurmError, UserError

LOG_FOLDER = "slurm"
DEFAULT_TIME_MIN = 24 * 60
SIGNAL_BEFORE_S = 90  # Slurm's warning before the time limit: time to checkpoint and requeue
MAX_FAILED_STATUS = 101  # GNU parallel: 1-100 failed runs, 101 for more
POLL_S = 1.0
MIN_TIME_MIN = -(-2 * SIGNAL_BEFORE_S // 60)  # a run gets at least as long before the warning
_MEM = re.compile(r"^(0|[1-9][0-9]{0,8}[KMGTkmgt]?)$")
# Pending reasons under which a job can never start as asked (squeue %r): --wait stops at them.
NEVER_RUNS = (
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "BadConstraints",
    "InvalidQOS",
    "InvalidAccount",
    "QOSMaxCpuPerJobLimit",
    "QOSMaxGRESPerJob",
    "QOSMaxMemoryPerJob",
    "QOSMaxWallDurationPerJobLimit",
    "DependencyNeverSatisfied",
    "JobHeldAdmin",
)


@dataclass(frozen=True)
class SlurmOptions:
    """What each task asks Slurm for."""

    partition: str | None = None
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem: str | None = None
    time_min: int = DEFAULT_TIME_MIN
    array_parallelism: int | None = None


def add_slurm_arguments(parser: argparse.ArgumentParser) -> None:
    """The Slurm flags, shared by prepare_experiments and local_sweep."""
    group = parser.add_argument_group("Slurm (with --slurm)")
    group.add_argument(
        "--slurm", action="store_true", help="submit to Slurm (submitit) instead of printing"
    )
    group.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    group.add_argument("--gpus-per-run", type=int, help="GPUs per run (--gres=gpu:N; default 0)")
    group.add_argument("--cpus-per-run", type=int, help="CPUs per run (default 1)")
    group.add_argument("--mem", help="memory per run, as Slurm writes it (4G, 500M, 0 = all)")
    group.add_argument(
        "--time",
        type=int,
        help=f"time limit per run in minutes (default {DEFAULT_TIME_MIN}, at least "
        f"{MIN_TIME_MIN}); a run that hits it checkpoints, is requeued and resumes while each "
        "attempt finishes an epoch",
    )
    group.add_argument(
        "--array-parallelism", type=int, help="at most K runs of the array at once (%%K)"
    )


SLURM_ONLY = ("partition", "gpus_per_run", "cpus_per_run", "mem", "time", "array_parallelism")
DEFAULTS = {"gpus_per_run": 0, "cpus_per_run": 1, "time": DEFAULT_TIME_MIN}


def options_from_args(args: argparse.Namespace) -> SlurmOptions:
    """Checked Slurm options (the defaults filled into ``args``); a bad value, or a Slurm flag
    without --slurm, is a one-line UserError (exit 2)."""
    given = [f"--{k.replace('_', '-')}" for k in SLURM_ONLY if getattr(args, k) is not None]
    if not args.slurm and given:
        raise UserError(f"{given[0]} needs --slurm")
    for key, value in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not 0 <= args.gpus_per_run <= 64:
        raise UserError(f"--gpus-per-run must be 0 to 64, got {args.gpus_per_run}")
    if not 1 <= args.cpus_per_run <= 4096:
        raise UserError(f"--cpus-per-run must be 1 to 4096, got {args.cpus_per_run}")
    if not MIN_TIME_MIN <= args.time <= 365 * 24 * 60:
        raise UserError(
            f"--time must be {MIN_TIME_MIN} to 525600 minutes (Slurm warns a run "
            f"{SIGNAL_BEFORE_S}s before its limit to checkpoint), got {args.time}"
        )
    if args.mem is not None and not _MEM.match(args.mem):
        raise UserError(f"--mem must be a size as Slurm writes it (4G, 500M, 0), got {args.mem!r}")
    if args.array_parallelism is not None and not 1 <= args.array_parallelism <= 100_000:
        raise UserError(f"--array-parallelism must be 1 to 100000, got {args.array_parallelism}")
    if args.partition is not None and not re.match(r"^[A-Za-z0-9_.,-]{1,100}$", args.partition):
        raise UserError(f"--partition must be a partition name, got {args.partition!r}")
    return SlurmOptions(
        args.partition,
        args.gpus_per_run,
        args.cpus_per_run,
        args.mem,
        args.time,
        args.array_parallelism,
    )


def check_slurm() -> None:
    """sbatch must be on the PATH (a login or compute node of a cluster)."""
    if shutil.which("sbatch") is None:
        raise SlurmError(
            "sbatch not found: run this on a Slurm login node (or start a test cluster as root: "
            "bash tasks/slurm_cluster.sh start)"
        )


def executor(folder: Path, options: SlurmOptions, job_name: str) -> Any:
    """A submitit SlurmExecutor asking for what each run needs, requeueable, with Slurm's
    warning ``SIGNAL_BEFORE_S`` seconds before the time limit."""
    import submitit

    from text_recognizer.orchestration.slurm_task import MAX_REQUEUES

    ex = submitit.SlurmExecutor(folder=folder / "%j", max_num_timeout=MAX_REQUEUES)
    params: dict[str, Any] = {
        "job_name": job_name[:100],
        "time": options.time_min,
        "cpus_per_task": options.cpus_per_run,
        "ntasks_per_node": 1,
        "signal_delay_s": SIGNAL_BEFORE_S,
        "additional_parameters": {"requeue": True},
        "stderr_to_stdout": True,
    }
    if options.partition:
        params["partition"] = options.partition
    if options.gpus_per_run:
        params["gres"] = f"gpu:{options.gpus_per_run}"
    if options.mem:
        params["mem"] = options.mem
    if options.array_parallelism:
        params["array_parallelism"] = options.array_parallelism
    ex.update_parameters(**params)
    return ex


def submit_tasks(ex: Any, tasks: Sequence[Any]) -> list[Any]:
    """All tasks as one job array (one sbatch call); a refusal is one SlurmError line."""
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    jobs: list[Any] = []
    try:  # submitit prints sbatch's refusal too: it is said once, in the error below
        with contextlib.redirect_stderr(io.StringIO()), ex.batch():
            for task in tasks:
                jobs.append(ex.submit(task))
    except (FailedJobError, FailedSubmissionError, subprocess.CalledProcessError) as e:
        raise SlurmError(f"Slurm refused the job array: {_slurm_message(e)}") from None
    return jobs


def _slurm_message(e: BaseException) -> str:
    text = str(getattr(e, "stderr", None) or getattr(e, "output", None) or e)
    lines = [ln.strip() for ln in text.splitlines() if "error" in ln.lower()] or [text.strip()]
    return lines[-1][:300]


def array_id(jobs: Sequence[Any]) -> str:
    """The array's job id (``123`` of ``123_0``...)."""
    return str(jobs[0].job_id).split("_")[0]


def watch_lines(job_id: str, first_log: Path) -> list[str]:
    return [
        f"watch:   squeue -j {job_id}     (sacct -j {job_id} where accounting is on)",
        f"logs:    {first_log} (one folder per task)",
        f"cancel:  scancel {job_id}",
    ]


def never_runs(reason: str) -> bool:
    """True for a pending reason under which the job can never start as asked."""
    return any(reason.strip().startswith(r) for r in NEVER_RUNS)


def wait_for(job_id: str) -> None:
    """Until no task of the job is left in the queue (requeued ones count as left). A task
    pending for a reason it can never get past (``NEVER_RUNS``: more CPUs than a node has...)
    is one SlurmError line, the job cancelled, rather than a wait without end."""
    while True:
        try:
            out = subprocess.run(
                ["squeue", "-h", "-r", "-j", job_id, "-o", "%i|%T|%r"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired:
            out = None
        if out is not None:
            if out.returncode != 0 and "Invalid job id" in out.stderr:
                return  # gone from slurmctld's memory: long done
            if out.returncode == 0 and not out.stdout.strip():
                return
            if out.returncode == 0:
                for line in out.stdout.splitlines():
                    task, state, reason = ([*line.split("|", 2), "", ""])[:3]
                    if state == "PENDING" and never_runs(reason):
                        scancel([job_id])
                        raise SlurmError(
                            f"Slurm job {task} can never start: pending ({reason.strip()}); "
                            f"cancelled it (ask for what a node of the partition has)"
                        )
        time.sleep(POLL_S)


def scancel(args: Sequence[str], tries: int = 3) -> str:
    """``scancel ARGS``, tried again on failure (slurmctld busy); '' when done, else why not."""
    why = ""
    for attempt in range(tries):
        try:
            done = subprocess.run(
                ["scancel", *args], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            why = str(e)
        else:
            if done.returncode == 0:
                return ""
            why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
            if "Invalid job id" in why or "already completing or completed" in why:
                return ""  # gone already
        if attempt + 1 < tries:
            time.sleep(1.0)
    return f"scancel {' '.join(args)} failed: {why[:200]}"


def task_outcome(job: Any) -> tuple[bool, str]:
    """(finished, why not) for one ended task, from submitit's result file."""
    from submitit.core.utils import pickle_load

    path = job.paths.result_pickle
    if not path.exists():
        return False, f"no result (see {job.paths.stdout})"
    try:
        outcome, value = pickle_load(path)
    except Exception as e:  # a torn or foreign file: the task did not report
        return False, f"unreadable result {path} ({type(e).__name__})"
    if outcome == "success" and value == 0:
        return True, ""
    last = str(value).strip().splitlines()[-1] if str(value).strip() else str(value)
    return False, f"{last[:300]} (log: {job.paths.stdout})"


def failed_status(failed: int) -> int:
    """GNU parallel's exit status: the number of failed jobs, 101 for more than 100."""
    return min(failed, MAX_FAILED_STATUS)


def array_runs(search_dir: Path, nonces: Collection[str]) -> list[Path]:
    """The run folders of this array's tasks: their summary.json names a task's ``nonce`` (not the
    job id, which Slurm reuses)."""
    from text_recognizer.run.records import read_json

    if not search_dir.is_dir():
        return []
    out = []
    for child in sorted(search_dir.iterdir()):
        recorded = read_json(child / "summary.json").get("slurm")
        if isinstance(recorded, dict) and recorded.get("nonce") in nonces:
            out.append(child)
    return out


def print_table(run_dirs: Sequence[Path]) -> None:
    """The compare_runs table of these runs on stdout."""
    from text_recognizer.orchestration.compare import format_table, load_run, terminal_width

    if not run_dirs:
        return
    runs = [load_run(d) for d in run_dirs]
    sys.stdout.write(format_table(runs, width=terminal_width()) + "\n")
    sys.stdout.flush()


def experiment_tasks(
    configs: Sequence[dict[str, Any]],
    python: str,
    save: bool,
    nowandb: bool,
    run_script: str,
) -> tuple[list[Any], Path]:
    """One SlurmTask per config, each the command prepare_experiments prints; and the group
    folder where their runs appear."""
    import json
    import shlex

    from text_recognizer.orchestration.slurm_task import SlurmTask
    from text_recognizer.run.records import slug

    cwd = Path.cwd()
    script = run_script
    if not (cwd / run_script).is_file():  # submitted from elsewhere: the checkout's script
        script = str(paths.PROJECT_ROOT / run_script)
    runs_root = paths.runs_dir().resolve()
    flags = ["--save"] if save else []
    flags += ["--nowandb"] if nowandb else []
    tasks, group_dirs = [], set()
    for i, config in enumerate(configs):
        group_dir = runs_root / slug(config.get("experiment_group") or "default")
        group_dirs.add(group_dir)
        base = [*shlex.split(python), script]
        text = json.dumps(config, separators=(",", ":"))
        tasks.append(
            SlurmTask(
                command=[*base, "--gpu=-1", text, *flags],
                resume_base=[*base, "--gpu=-1", *flags],
                search_dir=str(group_dir),
                runs_root=str(runs_root),
                cwd=str(cwd),
                label=f"experiments[{i}]",
            )
        )
    if len(group_dirs) != 1:
        raise UserError("the experiments of one file must share one experiment_group")
    return tasks, group_dirs.pop()


def submit_experiments(
    configs: Sequence[dict[str, Any]],
    options: SlurmOptions,
    python: str | None,
    save: bool,
    nowandb: bool,
    wait: bool,
    run_script: str,
) -> int:
    """Submit the experiments as one array; print its id and how to watch it; with ``wait``,
    wait and print the runs' table; return the exit status (failed runs when waiting, else 0)."""
    check_slurm()
    tasks, group_dir = experiment_tasks(
        configs, python or sys.executable, save, nowandb, run_script
    )
    log_folder = group_dir / LOG_FOLDER
    made = [p for p in (group_dir, log_folder) if not p.exists()]
    try:
        log_folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from text_recognizer.errors import storage_error

        raise storage_error(e, log_folder, "create the Slurm log folder") from None
    started = time.monotonic()
    try:
        jobs = submit_tasks(executor(log_folder, options, group_dir.name), tasks)
    except SlurmError:  # refused: leave nothing behind that this call made
        for path in reversed(made):
            shutil.rmtree(path, ignore_errors=True)
        raise
    job_id = array_id(jobs)
    progress.line(
        f"submitted {len(jobs)} run(s) as Slurm job array {job_id} "
        f"({time.monotonic() - started:.1f}s); runs go to {group_dir}"
    )
    print(job_id, flush=True)
    for line in watch_lines(job_id, jobs[0].paths.stdout):
        progress.line(line)
    if not wait:
        return 0
    try:
        wait_for(job_id)
    except KeyboardInterrupt:
        progress.line(f"stopped waiting; the runs go on (scancel {job_id} stops them)")
        return 130
    failed = 0
    for job, task in zip(jobs, tasks, strict=True):
        ok, why = task_outcome(job)
        if not ok:
            failed += 1
            progress.line(f"{task.label} ({job.job_id}) failed: {why}")
    print_table(array_runs(group_dir, {task.nonce for task in tasks}))
    progress.line(
        f"Slurm job array {job_id}: {len(jobs) - failed} finished, {failed} failed "
        f"in {time.monotonic() - started:.0f}s"
    )
    return failed_status(failed)
