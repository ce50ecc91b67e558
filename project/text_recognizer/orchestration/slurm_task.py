"""One Slurm task: a run's command as a subprocess, resumed in its own run folder when requeued.

This object is what submitit pickles and runs on the compute node (``python -m
submitit.core._submit``). It runs exactly the command ``prepare_experiments`` prints (or a sweep
trial's), so a run under Slurm is the same run as anywhere else. What it adds is the way back
after an interruption:

- Slurm's warning before the time limit or a preemption (``--signal=USR2@90``, submitit's) reaches
  the run, which checkpoints and ends ``interrupted`` (exit 130); submitit then calls
  ``checkpoint`` here, which waits for the run and hands back the same task bound to its run
  folder, and requeues the job.
- A plain SIGTERM (``scancel --signal=TERM``) ends the run ``interrupted`` as well; the task then
  requeues its own job (``scontrol requeue``, the same job id) unless it was cancelled outright.
- The requeued task continues the run with ``--resume RUN_DIR``: the folder is the one whose
  ``summary.json`` names this task's ``nonce`` (one per submission, given to the run in its
  environment and recorded by ``leasing/slurm_job.record_fields``; Slurm's job ids repeat, so they
  are not matched, and the first attempt never searches), so no epoch is repeated. A run that
  failed (exit 1) or was refused as bad input (exit 2) is never requeued, nor an attempt that
  finished no new epoch, nor a job restarted ``MAX_REQUEUES`` times.

A task whose run did not finish raises ``SlurmTaskFailed``, so Slurm shows it FAILED and submitit's
result names the exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from text_recognizer.errors import SlurmTaskFailed

INTERRUPTED = 130
MAX_REQUEUES = 50  # a run interrupted this often without finishing is stopped, not requeued again
CHILD_GRACE_S = 60.0  # how long checkpoint() waits for the run to write its checkpoint and end
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2}


def find_task_run(search_dir: Path, nonce: str | None) -> Path | None:
    """The run folder in ``search_dir`` (one level down) whose summary.json names this task's
    submission (``nonce``, recorded as ``slurm.nonce``); None when it has none yet. Slurm's job ids
    are not matched: they repeat (a cluster's counter restarts, or wraps)."""
    from text_recognizer.run.records import read_json

    if not nonce or not search_dir.is_dir():
        return None
    found = []
    for child in search_dir.iterdir():
        recorded = read_json(child / "summary.json").get("slurm")
        if isinstance(recorded, dict) and recorded.get("nonce") == nonce:
            found.append(child)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def slurm_seconds(text: str) -> int | None:
    """Seconds of a Slurm duration (``[days-]hours:minutes:seconds``, ``minutes:seconds``);
    None for ``UNLIMITED``, ``INVALID`` or anything else."""
    days, _, clock = text.strip().rpartition("-")
    parts = clock.split(":")
    if (
        not (1 <= len(parts) <= 3)
        or not all(x.isdigit() for x in parts)
        or (days and not days.isdigit())
    ):
        return None
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    if len(parts) == 1:  # minutes alone
        seconds *= 60
    return seconds + int(days or 0) * 86400


def near_time_limit(job_id: str | None, margin_s: int = 150) -> bool:
    """Whether this job has run to within ``margin_s`` of its time limit (Slurm's warning comes
    90 s before it): a time-out, not a preemption. True when Slurm cannot say (the careful side:
    the no-progress rule then applies)."""
    if not job_id:
        return True
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%M %l"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return True
    if len(out) != 2:
        return True
    used, limit = slurm_seconds(out[0]), slurm_seconds(out[1])
    if used is None:
        return True
    return limit is not None and used >= limit - margin_s


def restart_count(env: Any = None) -> int:
    """``SLURM_RESTART_COUNT``: 0 on a job's first attempt."""
    value = (os.environ if env is None else env).get("SLURM_RESTART_COUNT", "0").strip()
    return int(value) if value.isascii() and value.isdigit() else 0


def last_epoch(run_dir: Path | None) -> int:
    """The last epoch logged in ``run_dir``'s metrics.jsonl; 0 when none (or no folder)."""
    import json

    if run_dir is None:
        return 0
    try:
        text = (run_dir / "metrics.jsonl").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    last = 0
    for line in text.splitlines():
        try:
            epoch = json.loads(line).get("epoch")
        except (ValueError, AttributeError):
            continue
        if isinstance(epoch, int) and not isinstance(epoch, bool):
            last = max(last, epoch)
    return last


def exit_code(code: int) -> int:
    """A run killed by a stop signal before its handler was installed (exit -TERM, -USR2...) was
    interrupted, as one that caught it: 130."""
    if code < 0 and -code in _STOP_SIGNALS:
        return INTERRUPTED
    return code


def job_state(job_id: str, timeout: float = 60) -> str:
    """One job's state as squeue reports it (``RUNNING``, ``PENDING``...); '' once it has left
    the queue; ``UNKNOWN`` when squeue cannot say now (slurmctld busy: ask again later)."""
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return "UNKNOWN"
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""


def _requeue(job_id: str) -> bool:
    try:
        done = subprocess.run(
            ["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"warning: scontrol requeue {job_id} failed: {e}", file=sys.stderr, flush=True)
        return False
    if done.returncode != 0:
        print(
            f"warning: scontrol requeue {job_id} failed: {done.stderr.strip()}",
            file=sys.stderr,
            flush=True,
        )
    return done.returncode == 0


@dataclass
class SlurmTask:
    """A picklable command for submitit: ``command`` runs the run from the start; ``resume_base``
    + ``--resume RUN_DIR`` continues it. ``search_dir`` is where its run folder appears (the
    experiment group's folder), unless ``run_dir`` is known (a sweep trial's, or after a
    checkpoint)."""

    command: list[str]
    resume_base: list[str]
    search_dir: str
    runs_root: str
    cwd: str
    label: str = ""
    requeue_on_term: bool = True
    run_dir: str | None = None
    log_path: str | None = None  # the run's output appended here (a sweep trial's log)
    unset_env: list[str] = field(default_factory=list)
    nonce: str = field(default_factory=lambda: uuid.uuid4().hex)  # this submission, in summary.json
    _proc: Any = field(default=None, repr=False, compare=False)
    _start_epoch: int = field(default=0, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_proc": None}

    def _run_dir(self, first_attempt: bool = False) -> Path | None:
        """The run folder this task began: the known one, else the one its nonce names. On the
        first attempt nothing is searched: a folder found then is another submission's."""
        if self.run_dir is not None:
            known = Path(self.run_dir)
            return known if (known / "summary.json").is_file() else None
        if first_attempt:
            return None
        return find_task_run(Path(self.search_dir), self.nonce)

    def argv(self) -> list[str]:
        """The command for this attempt: a fresh start, or ``--resume`` of the run it began."""
        run_dir = self._run_dir(first_attempt=restart_count() == 0)
        if run_dir is None:
            return list(self.command)
        return [*self.resume_base, "--resume", str(run_dir)]

    def _env(self) -> dict[str, str]:
        from text_recognizer.leasing.slurm_job import NONCE_ENV, slurm_gpus

        env = {k: v for k, v in os.environ.items() if k not in self.unset_env}
        if not slurm_gpus(env):  # inherited from the login shell: Slurm gave no GPU
            env.pop("CUDA_VISIBLE_DEVICES", None)
        env[NONCE_ENV] = self.nonce
        env["TEXT_RECOGNIZER_RUNS_DIR"] = self.runs_root
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def __call__(self) -> int:
        """Run the command; requeue the job after an interruption; raise unless it finished."""
        argv = self.argv()
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        self._start_epoch = last_epoch(self._run_dir()) if "--resume" in argv else 0
        what = "resuming" if "--resume" in argv else "starting"
        print(f"slurm task {self.label}: {what} (restart {restarts})", file=sys.stderr, flush=True)
        log = open(self.log_path, "a", encoding="utf-8") if self.log_path else None  # noqa: SIM115
        try:
            if log is not None:
                log.write(f"=== Slurm job {os.environ.get('SLURM_JOB_ID', '?')}: {what}\n")
                log.flush()
            self._proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT if log is not None else None,
            )
            code = exit_code(self._proc.wait())
        finally:
            if log is not None:
                log.close()
        if code == 0:
            return 0
        job = os.environ.get("SLURM_JOB_ID", "")
        requeue = code == INTERRUPTED and self.requeue_on_term and bool(job)
        if requeue and self._may_requeue(job) and _requeue(job):
            print(
                f"slurm task {self.label}: interrupted; requeued job {job} to resume",
                file=sys.stderr,
                flush=True,
            )
            sys.exit(-1)  # as submitit does: no result is written, the job comes back
        raise SlurmTaskFailed(f"{self.label}: the run exited with {code}", code)

    @staticmethod
    def _may_requeue(job: str) -> bool:
        """Only a job still running (signalled, not cancelled) and not requeued too often."""
        restarts = restart_count()
        if restart_count() >= MAX_REQUEUES:
            print(f"not requeued: restarted {restarts} times already", file=sys.stderr)
            return False
        return job_state(job, timeout=30) == "RUNNING"

    def checkpoint(self) -> Any:
        """Called by submitit on Slurm's warning (time limit, preemption): let the run end at its
        checkpoint and return this task bound to its run folder, for submitit to requeue.

        Not requeued (``SlurmTaskFailed`` with the run's own exit code, which submitit records as
        the task's result) when the run ended with a failure or bad input, when this attempt ran
        into its time limit without finishing a new epoch (a time limit too short for one epoch
        would requeue forever; a preemption is requeued), or after ``MAX_REQUEUES`` restarts."""
        from submitit.helpers import DelayedSubmission

        code = self._stop_run()
        code = None if code is None else exit_code(code)
        if code is not None and code not in (0, INTERRUPTED):
            raise SlurmTaskFailed(f"{self.label}: the run exited with {code}", code)
        run_dir = self._run_dir()
        if code != 0:
            why = ""
            if restart_count() >= MAX_REQUEUES:
                why = f"restarted {restart_count()} times already"
            elif last_epoch(run_dir) <= self._start_epoch and near_time_limit(
                os.environ.get("SLURM_JOB_ID")
            ):  # a preempted attempt is requeued whatever it finished (MAX_REQUEUES bounds it)
                why = "this attempt finished no new epoch (is --time shorter than one epoch?)"
            if why:
                print(f"slurm task {self.label}: not requeued: {why}", file=sys.stderr, flush=True)
                raise SlurmTaskFailed(
                    f"{self.label}: the run exited with {INTERRUPTED} (not requeued: {why})",
                    INTERRUPTED,
                )
        bound = replace(self, run_dir=str(run_dir) if run_dir is not None else self.run_dir)
        return DelayedSubmission(bound)

    def _stop_run(self) -> int | None:
        """Wait for the run to end (it got Slurm's signal too); SIGTERM it if it has not after a
        few seconds, so its checkpoint is written before Slurm's kill. Its exit code, or None.

        This runs in a signal handler that interrupted ``Popen.wait``, which holds the lock that
        ``Popen.poll`` needs, so the child is reaped here with ``os.waitpid`` directly."""
        proc = self._proc
        if proc is None:
            return None
        started = time.monotonic()
        nudged = False
        while time.monotonic() - started < CHILD_GRACE_S:
            try:
                pid, status = os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:  # reaped already
                return proc.returncode
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                return proc.returncode
            if not nudged and time.monotonic() - started > 5:
                os.kill(proc.pid, signal.SIGTERM)  # the signal did not reach it (--signal=B:...)
                nudged = True
            time.sleep(0.2)
        return None
