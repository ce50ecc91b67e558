"""The scheduler: runs the trials of one sweep, J at a time, keeping state.json current.

It decides when and which: starts the engine's next trial while there is room, reaps the ones that
ended (their result read back from their run record), lets hyperband stop laggards, recovers the
trials an earlier session left running, and on a signal stops every trial in order. What a trial's
record says is read in one function, ``read_trial_record``, so the way records are read can change
in one place.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from text_recognizer.errors import StorageError, SweepError, print_error, stdout_to_devnull
from text_recognizer.orchestration.engine import EngineRun, next_params, runs_to_stop, sweep_run
from text_recognizer.orchestration.sweep_report import leaderboard, save_curves
from text_recognizer.orchestration.sweep_state import (
    STATUSES,
    TERMINAL,
    TRIAL_ID,
    Trial,
    check_state_dir,
    check_state_folder,
    load_or_create_state,
    timestamp,
)
from text_recognizer.orchestration.sweep_yaml import (
    describe_params,
    grid_size,
    sweep_metric,
    swept_params,
    trial_command,
)
from text_recognizer.orchestration.trial_process import (
    last_error,
    open_trial_log,
    spawn_trial,
    trial_env,
    trial_process_alive,
)

KILL_AGAIN_S = 5.0  # after the grace period, trials still alive are killed again this often


def read_trial_record(run_dir: Path, part: str) -> Any:
    """One part of a trial's run record: ``"metrics"`` (metrics.jsonl's rows, one per epoch),
    ``"summary"`` / ``"config"`` (that JSON object, {} when missing or unreadable), or ``"run"``
    (the whole record as a compare_runs row, ``compare.RunInfo``).

    The sweep's only reader of run records; the reading itself is run/records.py's, the one
    that compare_runs, the runner and ``--resume`` use too.
    """
    from text_recognizer.orchestration.compare import load_run
    from text_recognizer.run.records import read_history, read_json

    if part == "run":
        return load_run(run_dir, run_dir.name)
    if part == "metrics":
        return read_history(run_dir / "metrics.jsonl")
    return read_json(run_dir / f"{part}.json")


@dataclass
class _Active:
    trial: Trial
    proc: subprocess.Popen
    log: IO[str]
    started: float
    epochs: int | None = None


class LocalSweep:
    """Runs the trials of one sweep, J at a time, keeping state.json current."""

    poll_s = 0.25
    term_grace_s = 60.0

    def __init__(
        self,
        sweep: dict[str, Any],
        source: str,
        state_dir: Path,
        jobs: int = 1,
        count: int | None = None,
        gpu: int | None = -1,
        nowandb: bool = False,
        out: IO[str] | None = None,
        custom_state: bool = False,
        resume: str | None = None,
        launcher: Any = None,
    ) -> None:
        from text_recognizer.fileio import clean_stale_temps

        self.sweep = sweep
        self.source = source
        self.state_dir = Path(state_dir)
        self.group = check_state_dir(self.state_dir)
        check_state_folder(self.state_dir, "--state folder" if custom_state else "state folder")
        self.jobs = jobs
        self.gpu = gpu
        self.nowandb = nowandb
        self.out = out or sys.stdout
        self.custom_state = custom_state  # the resume hint then names --state
        # None: trials are local subprocesses; else what submits them (slurm_trials, --slurm)
        self.launcher = launcher
        # The command that resumes the sweep, with the options it was started with.
        self.resume = resume or shlex.join(
            ["python", "training/local_sweep.py", source]
            + (["--state", str(state_dir)] if custom_state else [])
        )
        self.metric, self.maximize = sweep_metric(sweep)
        self.state_path = self.state_dir / "state.json"
        self.logs_dir = self.state_dir / "logs"
        self.active: dict[str, _Active] = {}
        self.stopping: int | None = None  # the signal that asked us to stop
        self.force = False
        self.abort: str | None = None  # a trial hit bad input: launch no more
        self.exhausted = False
        # A local_sweep killed while writing state.json or curves.png left its temp file there.
        clean_stale_temps(self.state_dir)
        self.state = load_or_create_state(self.state_dir, sweep, source, count)
        self.total = self._total()
        self._histories: dict[str, list[dict[str, Any]]] = {}
        self._warned_metric = False
        self._said_target = False

    # -- state ------------------------------------------------------------------------------

    def _limit(self) -> int | None:
        """The most trials the sweep runs: --count and the YAML's ``run_cap`` (W&B: the most runs
        a sweep launches), the smaller; None when neither is given (a grid then runs all of it)."""
        caps = [int(c) for c in (self.state.count, self.sweep.get("run_cap")) if c is not None]
        return min(caps) if caps else None

    def _total(self) -> int:
        limit = self._limit()
        if self.sweep["method"] == "grid":
            size = grid_size(self.sweep)
            return min(size, limit) if limit else size
        return int(limit or 0)

    def save(self) -> None:
        """Write state.json after every change, so a resume sees exactly what happened."""
        self.state.save(self.state_path)

    def say(self, text: str) -> None:
        """One progress line, flushed at once (the output is often a log file).

        When the output's reader has gone (``| head``, or a ``| tee`` that the same Ctrl-C ended),
        the lines go on to stderr, so the sweep still stops its trials in order and says how to
        resume; where stderr is gone too, they are dropped. Never a BrokenPipeError.
        """
        try:
            print(text, file=self.out, flush=True)
            return
        except BrokenPipeError:
            if self.out is sys.stdout:
                stdout_to_devnull()  # what is still buffered must not fail again at exit
            if self.out is sys.stderr:
                self.out = io.StringIO()  # nowhere left to write: keep going in silence
                return
            self.out = sys.stderr
        with contextlib.suppress(BrokenPipeError):
            print(text, file=self.out, flush=True)

    def _also_on_stderr(self, text: str) -> None:
        """Also on stderr when the output is a pipe: a ``| tee`` that the same Ctrl-C ended may
        have died before reading the line, which the write into the pipe cannot tell."""
        if self.out is sys.stderr:
            return
        try:
            out, err = os.fstat(self.out.fileno()), os.fstat(sys.stderr.fileno())
        except (OSError, ValueError, AttributeError):
            return
        if stat.S_ISFIFO(out.st_mode) and (out.st_dev, out.st_ino) != (err.st_dev, err.st_ino):
            with contextlib.suppress(OSError):
                print(text, file=sys.stderr, flush=True)

    def _done(self) -> int:
        return sum(t.status in TERMINAL for t in self.state.trials)

    # -- engine -----------------------------------------------------------------------------

    def _history(self, trial: Trial) -> list[dict[str, Any]]:
        """The trial's per-epoch metrics; cached once it has ended (its record no longer grows)."""
        if trial.id in self._histories:
            return self._histories[trial.id]
        history = read_trial_record(self.state_dir / trial.id, "metrics")
        if trial.status in TERMINAL:
            self._histories[trial.id] = history
        return history

    def _sweep_runs(self, trials: list[Trial]) -> list[EngineRun]:
        return [sweep_run(t, self.metric, self._history) for t in trials]

    def _propose(self) -> Trial | None:
        """A new trial from the engine, or None when the sweep has all it should run."""
        limit = self._limit()
        if self.exhausted or (limit and len(self.state.trials) >= limit):
            return None
        index = len(self.state.trials) + 1
        runs = self._sweep_runs(self.state.trials)
        params = next_params(self.sweep, runs, f"{self.state.name}/{index}")
        if params is None:
            self.exhausted = True
            return None
        trial = Trial(id=f"trial-{index:04d}", params=params)
        self.state.trials.append(trial)
        return trial

    # -- trials -----------------------------------------------------------------------------

    def _not_ours(self, trial_id: str) -> SweepError:
        return SweepError(
            f"{self.state_dir / trial_id} is in the way: {self.state_path} records no attempt of "
            f"{trial_id}, so it is not a record of this sweep; move it away and run the same "
            "command to resume"
        )

    def _check_trial_folders(self) -> None:
        """Refuse, before any trial starts, a trial-NNNN entry that state.json records no start of
        (it would be replaced when the engine proposes that trial)."""
        started = {t.id for t in self.state.trials if t.attempts > 0}
        try:
            names = sorted(os.listdir(self.state_dir))
        except OSError:
            return
        for name in names:
            if TRIAL_ID.fullmatch(name) and name not in started:
                raise self._not_ours(name)

    def _clear_trial_folder(self, trial: Trial) -> None:
        """Only the folder of a recorded attempt is replaced, and a link is removed, not followed."""
        run_dir = self.state_dir / trial.id
        if trial.attempts < 1 and (run_dir.exists() or run_dir.is_symlink()):
            raise self._not_ours(trial.id)
        if run_dir.is_symlink() or run_dir.is_file():
            run_dir.unlink()
        elif run_dir.exists():  # the partial record of an interrupted attempt
            shutil.rmtree(run_dir)
        self._histories.pop(trial.id, None)

    def _start(self, trial: Trial) -> None:
        """Start a trial; its attempt is saved before it makes its folder (so a resume may replace
        that folder), its pid right after."""
        self._clear_trial_folder(trial)
        extra = [f"--experiment_group={self.group}", f"--run_name={trial.id}"]
        extra.append("--gpu=cpu" if self.gpu is None else f"--gpu={self.gpu}")
        if self.nowandb:
            extra.append("--nowandb")
        command = trial_command(self.sweep, trial.params, extra)
        env = trial_env(self.state_dir)
        trial.attempts += 1
        self.save()
        header = f"=== attempt {trial.attempts}, {timestamp()}: {' '.join(command)}"
        log = open_trial_log(self.logs_dir / f"{trial.id}.log", header)
        if self.launcher is None:
            proc = spawn_trial(command, env, log)
        else:
            proc = self.launcher.spawn(command, env, log, trial.id)
        trial.status = "running"
        trial.pid = proc.pid
        trial.exit_code = trial.metric = trial.error = trial.ended_at = trial.wall_time = None
        trial.stop_requested = False
        trial.started_at = timestamp()
        self.active[trial.id] = _Active(trial, proc, log, time.monotonic())
        self.save()
        again = f" (attempt {trial.attempts})" if trial.attempts > 1 else ""
        self.say(
            f"[{self._done()}/{self.total}] start {trial.id}{again}: "
            f"{describe_params(swept_params(self.sweep, trial.params))}"
        )

    def _trial_metric(self, trial: Trial, summary: dict[str, Any]) -> float | None:
        """The sweep metric's best value (W&B's extremum over history and summary)."""
        from text_recognizer.orchestration.compare import _is_number

        if not self.metric:
            return None
        values = [h[self.metric] for h in self._history(trial) if _is_number(h.get(self.metric))]
        if _is_number(summary.get(self.metric)):
            values.append(summary[self.metric])
        if not values:
            return None
        return float(max(values) if self.maximize else min(values))

    def _last_error(self, trial: Trial) -> str | None:
        return last_error(self.logs_dir / f"{trial.id}.log")

    def _ended_status(self, trial: Trial, rc: int, recorded: Any) -> str:
        """How a trial that exited with ``rc`` ended; bad input (exit 2) also stops the sweep."""
        if rc == 0 and recorded == "finished":  # even if a stop came too late to matter
            return "finished"
        if trial.stop_requested:
            return "stopped"
        if self.stopping is not None or rc in (130, -signal.SIGTERM, -signal.SIGINT):
            return "interrupted"
        if rc == 2:  # bad input the up-front checks cannot see (data missing): rerun on resume
            trial.error = (self._last_error(trial) or "exit code 2").removeprefix("error: ")
            self.abort = self.abort or f"{trial.id} stopped on bad input: {trial.error}"
            return "interrupted"
        return "failed"

    def _finish(self, active: _Active, rc: int) -> None:
        """Record an ended trial: its status, exit code, time and metric; say how it ended."""
        trial = active.trial
        active.log.close()
        del self.active[trial.id]
        summary = read_trial_record(self.state_dir / trial.id, "summary")
        status = trial.status = self._ended_status(trial, rc, summary.get("status"))
        trial.exit_code = rc
        trial.pid = None
        trial.ended_at = timestamp()
        trial.wall_time = summary.get("wall_time") or (time.monotonic() - active.started)
        self._histories.pop(trial.id, None)
        trial.metric = self._trial_metric(trial, summary)
        if status == "failed":
            trial.error = summary.get("error") or self._last_error(trial) or f"exit code {rc}"
        self.save()
        if status == "stopped":
            self._drop_checkpoints(trial)
        note = {
            "finished": "finished",
            "stopped": "stopped early (hyperband)",
            "interrupted": f"stopped on bad input: {trial.error}"
            if rc == 2 and self.stopping is None
            else "interrupted (rerun on resume)",
            "failed": f"failed: {trial.error}",
        }[status]
        value = f", {self.metric} {trial.metric:.4f}" if trial.metric is not None else ""
        self.say(f"[{self._done()}/{self.total}] {trial.id} {note}{value} ({trial.wall_time:.1f}s)")
        if status == "finished" and self.metric and trial.metric is None:
            self._warn_no_metric(trial, summary)

    def _warn_no_metric(self, trial: Trial, summary: dict[str, Any]) -> None:
        """Once per session: a finished trial without the sweep's metric (a typo in the YAML)."""
        if self._warned_metric:
            return
        self._warned_metric = True
        keys = sorted(
            {k for h in self._history(trial) for k in h} | {k for k in summary if k != "status"}
        )
        self.say(
            f"warning: {trial.id} reported no {self.metric!r} (the sweep's metric); it has "
            f"{', '.join(keys)}"
        )

    def _drop_checkpoints(self, trial: Trial) -> None:
        """A stopped trial is never rerun, but its run recorded itself ``interrupted`` (it got
        SIGTERM) and so kept its resume checkpoints: drop them, as a finished run drops its own
        (run/records.py's rule); weights.pt stays. A trial folder that is a link is not followed."""
        from text_recognizer.run.records import RunRecord

        run_dir = self.state_dir / trial.id
        if run_dir.is_dir() and not run_dir.is_symlink():
            RunRecord(run_dir).remove_checkpoints()

    def _reap(self) -> None:
        for active in list(self.active.values()):
            rc = active.proc.poll()
            if rc is not None:
                self._finish(active, rc)

    def _early_terminate(self) -> None:
        """Hyperband: stop running trials whose metric lags at the band they reached."""
        if "early_terminate" not in self.sweep or not self.active:
            return
        runs = self._sweep_runs([t for t in self.state.trials if t.status != "pending"])
        for stop in runs_to_stop(self.sweep, runs):
            active = self.active.get(stop.name)
            if active is None or active.trial.stop_requested:
                continue
            done = len(self._history(active.trial))
            if active.epochs is None:
                config = read_trial_record(self.state_dir / stop.name, "config")
                active.epochs = (config.get("train_args") or {}).get("epochs")
            if active.epochs is not None and done >= active.epochs:
                continue  # its last epoch is done: let it finish and test
            active.trial.stop_requested = True
            self.save()
            self.say(f"hyperband: stopping {stop.name} after epoch {done} {stop.why}")
            with contextlib.suppress(ProcessLookupError):
                active.proc.send_signal(signal.SIGTERM)

    # -- the loop -----------------------------------------------------------------------------

    def _recover(self) -> None:
        """Trials that were running when the last session ended are rerun (after their process,
        if it somehow survived, is gone); a trial hyperband had asked to stop counts as stopped."""
        for trial in self.state.trials:
            if trial.status not in STATUSES:
                self.say(
                    f"warning: {self.state_path}: {trial.id} has an unknown status "
                    f"{trial.status[:40]!r}; it is rerun"
                )
                trial.status = "interrupted"
            if trial.status not in ("running", "interrupted", "pending"):
                continue
            if trial.pid and trial_process_alive(trial.pid, trial.id):
                self._stop_leftover(trial, trial.pid)
            if self.launcher is not None and trial.status in ("running", "interrupted"):
                self.launcher.stop_leftover(trial.id)  # a Slurm job a killed session left
            if trial.stop_requested and trial.status == "running":
                trial.status = "stopped"
                summary = read_trial_record(self.state_dir / trial.id, "summary")
                trial.metric = self._trial_metric(trial, summary)
            else:
                trial.status = "pending"
            trial.pid = None
        self.save()
        for trial in self.state.trials:  # those stopped here, and by a session before this rule
            if trial.status == "stopped":
                self._drop_checkpoints(trial)

    def _stop_leftover(self, trial: Trial, pid: int) -> None:
        """A trial process of the last session still alive: SIGTERM, SIGKILL after the grace."""
        self.say(f"waiting for {trial.id} (pid {pid}) from the last session to stop")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.term_grace_s
        while trial_process_alive(pid, trial.id) and time.monotonic() < deadline:
            time.sleep(0.2)
        if trial_process_alive(pid, trial.id):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _target_reached(self) -> bool:
        """W&B's ``metric.target``: once a trial that ended (finished, stopped early or failed) has
        reached it (at or below it when minimizing, at or above when maximizing), the sweep
        starts no more trials; those running go on to their end. Said once."""
        target = (self.sweep.get("metric") or {}).get("target")
        if target is None or not self.metric:
            return False
        for trial in self.state.trials:
            if trial.status not in TERMINAL or trial.metric is None:
                continue
            if trial.metric >= target if self.maximize else trial.metric <= target:
                if not self._said_target:
                    self._said_target = True
                    self.say(
                        f"{trial.id} reached the target {self.metric} {target:g} "
                        f"({trial.metric:.4g}, metric.target): no more trials are started"
                    )
                return True
        return False

    def _next_trial(self) -> Trial | None:
        if self._target_reached():
            return None
        for trial in self.state.trials:
            if trial.status == "pending" and trial.id not in self.active:
                return trial
        return self._propose()

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.stopping is not None:
            self.force = True
            return
        self.stopping = signum

    def _stop_all(self) -> None:
        """Stop the running trials (SIGTERM, then SIGKILL after a grace period or a 2nd signal)."""
        if self.active:
            self.say(
                f"stopping: {len(self.active)} running trial(s) get SIGTERM and are rerun on "
                "resume (signal again to kill them now)"
            )
        for active in self.active.values():
            with contextlib.suppress(ProcessLookupError):
                active.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.term_grace_s
        killed_at: float | None = None
        while self.active:
            self._reap()
            now = time.monotonic()
            due = killed_at is None or now - killed_at >= KILL_AGAIN_S
            if self.active and (self.force or now > deadline) and due:
                killed_at = now  # again only after a pause: a Slurm trial's kill is a scancel
                for active in self.active.values():
                    with contextlib.suppress(ProcessLookupError):
                        active.proc.kill()
            time.sleep(0.05)

    def _loop(self) -> None:
        """Start trials while there is room, reap them, let hyperband stop laggards; until done."""
        while self.stopping is None:
            while len(self.active) < self.jobs and self.stopping is None and not self.abort:
                trial = self._next_trial()
                if trial is None:
                    break
                self._start(trial)
            if not self.active:
                break
            time.sleep(self.poll_s)
            self._reap()
            self._early_terminate()
        if self.stopping is not None:
            self._stop_all()

    def _run_loop(self, previous: dict[int, Any]) -> StorageError | None:
        """The loop, after which no trial is left running, whatever happened, the ``previous``
        signal handlers are back and the state is saved. Returns the storage error (a full or
        read-only disk) that ended it early, if one did."""
        try:
            self._loop()
        except StorageError as e:  # the disk filled up (or went read-only) while trials ran
            return e
        finally:
            for active in list(self.active.values()):  # an unexpected error: leave no trial behind
                with contextlib.suppress(ProcessLookupError):
                    active.proc.kill()
            for s, handler in previous.items():
                signal.signal(s, handler)
            with contextlib.suppress(StorageError):
                self.save()
        return None

    def run(self) -> int:
        """Run the sweep to its end (or until a signal); return the exit code."""
        self._check_trial_folders()
        self.state.sessions += 1
        self._recover()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        started = time.monotonic()
        at_start = self._done()
        if at_start:
            self.say(f"resuming {self.state.name}: {at_start}/{self.total} trials done")
        failure = self._run_loop(previous)
        if failure is not None:
            print_error(failure)
            return 1
        elapsed = time.monotonic() - started
        if self.stopping is not None:
            hint = (
                f"interrupted after {elapsed:.0f}s: {self._done()}/{self.total} trials done; "
                f"resume with: {self.resume}"
            )
            self.say(hint)
            self._also_on_stderr(hint)
            return 130
        if self.abort:
            raise SweepError(
                f"{self.abort}; the sweep stopped ({self._done()}/{self.total} trials done): fix it and "
                f"run the same command to resume"
            )
        return self._report(at_start, elapsed)

    def rows(self) -> list[Any]:
        """The trials that started, as compare.RunInfo rows, with the sweep's status and metric."""
        from text_recognizer.orchestration.compare import RunInfo, flatten

        rows = []
        for trial in self.state.trials:
            if trial.status == "pending":
                continue
            run_dir = self.state_dir / trial.id
            info = read_trial_record(run_dir, "run") if run_dir.is_dir() else RunInfo(name=trial.id)
            if not info.flat:
                info.flat = flatten(trial.params)
            info.status = trial.status
            if self.metric:
                info.metrics.pop(self.metric, None)
                if trial.metric is not None:
                    info.metrics[self.metric] = trial.metric
            info.wall_time = info.wall_time or trial.wall_time
            rows.append(info)
        return rows

    def _report(self, at_start: int, elapsed: float) -> int:
        """The leaderboard, the curves and a one-line account; 1 when a trial failed."""
        rows = self.rows()
        self.say(f"\n{leaderboard(self.state, rows)}")
        save_curves(self.state, rows, self.state_dir, self.say)
        counts = {
            s: sum(t.status == s for t in self.state.trials) for s in (*TERMINAL, "interrupted")
        }
        self.say(
            f"sweep {self.state.name}: {len(self.state.trials)} trials ({counts['finished']} "
            f"finished, {counts['stopped']} stopped early, {counts['failed']} failed"
            + (f", {counts['interrupted']} interrupted" if counts["interrupted"] else "")
            + f"); this session ran {self._done() - at_start} in {elapsed:.0f}s; state in "
            f"{self.state_dir}"
        )
        return 1 if counts["failed"] else 0
