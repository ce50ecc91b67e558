"""Sweep trials as Slurm jobs: ``local_sweep.py SWEEP.yaml --slurm`` (the scheduler is unchanged).

The scheduler (``scheduler.LocalSweep``) starts, polls and stops trial processes; here a trial is
a Slurm job instead of a local subprocess, behind the same three calls: ``poll()`` (its exit code
once it has left the queue), ``send_signal(SIGTERM)`` (``scancel --signal=TERM``: hyperband's stop
and Ctrl-C of the sweep; the run checkpoints and ends ``interrupted``) and ``kill()``
(``scancel``). The trial writes into the same state folder (its run folder, ``logs/trial-N.log``);
submitit's files go to ``<state>/slurm/``. A trial's job is named after the state folder and the
trial, so a resumed sweep cancels what a killed session left queued before it reruns the trial.
Time limits and preemption: the task checkpoints and is requeued into the same trial folder
(``slurm_task.SlurmTask`` with the trial's run folder); a TERM from the sweep is never requeued.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from text_recognizer import paths
from text_recognizer.errors import SlurmError
from text_recognizer.orchestration.slurm import (
    LOG_FOLDER,
    SlurmOptions,
    executor,
    scancel,
    submit_tasks,
)
from text_recognizer.orchestration.slurm_task import job_state

POLL_EVERY_S = 2.0  # squeue at most this often per trial
_EXIT = re.compile(r"exited with (-?\d+)")


class SlurmTrialProcess:
    """A submitted trial, as the scheduler sees a process."""

    pid = 0  # no local process: a resumed sweep finds leftovers by job name instead

    def __init__(self, job: Any) -> None:
        self.job = job
        self.job_id = str(job.job_id)
        self.returncode: int | None = None
        self._signalled = False
        self._checked = 0.0

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        now = time.monotonic()
        if now - self._checked < POLL_EVERY_S:
            return None
        self._checked = now
        if job_state(self.job_id):
            return None
        self.returncode = self._exit_code()
        return self.returncode

    def _exit_code(self) -> int:
        """The run's exit code from submitit's result; 130 for a job cancelled on our signal."""
        from submitit.core.utils import pickle_load

        path = self.job.paths.result_pickle
        try:
            outcome, value = pickle_load(path)
        except Exception:  # no result: cancelled before it could write one, or killed
            return 130 if self._signalled else 1
        if outcome == "success":
            return int(value) if isinstance(value, int) else 0
        found = _EXIT.findall(str(value))
        return int(found[-1]) if found else 1

    def send_signal(self, signum: int) -> None:
        """SIGTERM: the run ends ``interrupted`` (a job still pending is cancelled). A scancel
        that fails after its retries is a warning line: the scheduler escalates to ``kill``."""
        self._signalled = True
        if job_state(self.job_id) == "PENDING":
            self._report(scancel([self.job_id]))
            return
        name = signal.Signals(signum).name.removeprefix("SIG")
        self._report(scancel([f"--signal={name}", self.job_id]))

    def kill(self) -> None:
        self._signalled = True
        self._report(scancel([self.job_id]))

    def _report(self, why: str) -> None:
        if why:
            print(f"warning: Slurm job {self.job_id}: {why}", file=sys.stderr, flush=True)


class SlurmTrialLauncher:
    """Submits trials to Slurm for the scheduler, one job per trial as the engine proposes it."""

    def __init__(self, options: SlurmOptions, state_dir: Path) -> None:
        self.options = options
        self.state_dir = Path(state_dir).resolve()
        self.folder = self.state_dir / LOG_FOLDER
        digest = hashlib.sha1(str(self.state_dir).encode()).hexdigest()[:8]
        self.prefix = f"sweep-{self.state_dir.name[:40]}-{digest}"

    def job_name(self, trial_id: str) -> str:
        return f"{self.prefix}-{trial_id}"

    def spawn(
        self, command: list[str], env: dict[str, str], log: IO[str], trial_id: str
    ) -> SlurmTrialProcess:
        """Submit the trial's command as one Slurm job; its output is appended to ``log``."""
        from text_recognizer.orchestration.slurm_task import SlurmTask
        from text_recognizer.orchestration.sweep_yaml import PROGRAM
        from text_recognizer.orchestration.trial_process import AGENT_ENV

        flags = [w for w in command if w.startswith("--gpu=") or w == "--nowandb"]
        script = str(paths.PROJECT_ROOT / "training" / "run_experiment.py")
        program = next(i for i, w in enumerate(command) if w.endswith(PROGRAM))
        task = SlurmTask(
            command=list(command),
            resume_base=[*command[:program], script, *flags],  # ${env} ${interpreter}
            search_dir=str(self.state_dir),
            runs_root=env["TEXT_RECOGNIZER_RUNS_DIR"],
            cwd=str(Path.cwd()),
            label=trial_id,
            requeue_on_term=False,  # the sweep's TERM is a stop, not a preemption
            run_dir=str(self.state_dir / trial_id),
            log_path=str(self.state_dir / "logs" / f"{trial_id}.log"),
            unset_env=list(AGENT_ENV),
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        ex = executor(self.folder, self.options, self.job_name(trial_id))
        (job,) = submit_tasks(ex, [task])
        log.write(f"submitted as Slurm job {job.job_id} (squeue -j {job.job_id})\n")
        log.flush()
        return SlurmTrialProcess(job)

    def stop_leftover(self, trial_id: str, timeout: float = 120.0) -> None:
        """Cancel a job of this trial that a session before this one left in the queue, and wait
        until it has gone, so a rerun never shares the trial's folder with it."""
        name = self.job_name(trial_id)
        try:
            listed = subprocess.run(
                ["squeue", "-h", "--name", name, "-o", "%i"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SlurmError(f"cannot list {trial_id}'s leftover Slurm jobs: {e}") from None
        if listed.returncode != 0:
            why = listed.stderr.strip().splitlines()[-1] if listed.stderr.strip() else "failed"
            raise SlurmError(f"cannot list {trial_id}'s leftover Slurm jobs: squeue: {why[:200]}")
        ids = listed.stdout.split()
        if not ids:
            return
        why = scancel(ids)
        if why:
            raise SlurmError(f"cannot cancel {trial_id}'s leftover Slurm job(s): {why}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(job_state(i) for i in ids):
            time.sleep(1)
        if any(job_state(i) for i in ids):
            raise SlurmError(
                f"{trial_id}'s leftover Slurm job(s) {' '.join(ids)} still queued after "
                f"{timeout:.0f}s; scancel them and resume"
            )
