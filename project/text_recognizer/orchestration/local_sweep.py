"""Run a W&B sweep YAML offline: the project's engine proposes (W&B's meaning), trials run here.

    python training/local_sweep.py training/sweep_mnist.yaml --jobs 2 [--count N] [--state DIR]
    python training/local_sweep.py training/sweep_mnist.yaml --jobs 8 --slurm [--partition P ...]

The YAML is the one ``wandb sweep`` takes. Each trial runs the YAML's command the way ``wandb agent``
does (``${env} ${interpreter} ${program} ${args}``, program training/run_sweep.py), as a subprocess
with ``--gpu=-1`` (a GPU leased through the GPUManager, else the CPU), J at a time. Its result comes
back from its run record (summary.json, metrics.jsonl) to the engine as an ``engine.EngineRun``:
the grid is walked in W&B's order (``sweep_space``, the project's own W&B-compatible parameter
space), random and bayes draws come from optuna's samplers; hyperband early termination
(``hyperband``, W&B's bands and thresholds) reads the per-epoch metrics of running trials and stops
the laggards with SIGTERM (the run records itself as interrupted; the sweep calls the trial
``stopped`` and drops its resume checkpoints). ``run_cap`` caps the trials as ``--count`` does (the
smaller wins), and once an ended trial reaches ``metric.target`` no more start. W&B's ``sweeps``
package is not used.

The state folder (default runs/sweeps/<name>/) holds everything, so a sweep resumes where it stopped:
    state.json            the sweep and every trial: parameters, status, attempts, metric (atomic)
    trial-0001/ ...       each trial's run record (trials run with the folder's name as their group)
    logs/trial-0001.log   each trial's output, every attempt appended
    curves.png            training curves, written at the end
Running the same command again resumes: finished, failed and stopped trials are kept and never rerun;
trials that were running (or pending) when the sweep was interrupted are rerun from the start.

This module is only the command: its flags, the checks before anything is written, and the one
lock. The parts live in ``sweep_yaml`` (the file), ``engine`` (grid, optuna's random and bayes,
hyperband), ``sweep_state`` (state.json and the folder), ``trial_process`` (a trial's process and
log), ``scheduler`` (the trials, J at a time) and ``sweep_report`` (leaderboard and curves).
With ``--slurm`` each trial is a Slurm job instead of a subprocess (``slurm_trials``).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from text_recognizer import progress
from text_recognizer.errors import (
    SweepError,
    UserError,
    command,
    one_line_parser,
    print_error,
    storage_error,
)
from text_recognizer.orchestration.scheduler import LocalSweep
from text_recognizer.orchestration.sweep_state import (
    check_state_dir,
    check_state_folder,
    check_sweep_name,
    default_state_dir,
    state_lock,
)
from text_recognizer.orchestration.sweep_yaml import (
    check_parameter_space,
    check_sweep,
    load_sweep,
)
from text_recognizer.orchestration.trial_args import parse_gpu

MAX_JOBS = 1024


def _parser() -> argparse.ArgumentParser:
    parser = one_line_parser(
        prog="local_sweep.py",
        description="Run a W&B sweep YAML offline, resumably: grid, random and bayes search "
        "(optuna's samplers over the project's W&B-compatible parameter space), W&B's "
        "hyperband.",
        epilog="State: runs/sweeps/<name>/ (state.json, one folder per trial, logs/). Run the same "
        "command again to resume an interrupted sweep.",
    )
    parser.add_argument("sweep", help="sweep YAML (the file `wandb sweep` takes)")
    parser.add_argument(
        "--count",
        type=int,
        help="trials in the whole sweep (grid: default all; random/bayes: needed unless the YAML "
        "sets run_cap; with run_cap, the smaller wins)",
    )
    parser.add_argument("--jobs", "-j", type=int, default=1, help="trials at a time (default 1)")
    parser.add_argument("--state", help="state folder (default runs/sweeps/<name>)")
    parser.add_argument(
        "--gpu",
        default="-1",
        help="what each trial passes to run_experiment: -1 leases any free GPU (default; the CPU "
        "when there is none), N a GPU index, cpu the CPU",
    )
    parser.add_argument("--nowandb", action="store_true", help="trials do not log to W&B")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check the YAML (program, command, every grid point) and exit: 0 when valid "
        "(tasks/sweep_wandb.sh runs this before `wandb sweep`)",
    )
    from text_recognizer.orchestration.slurm import add_slurm_arguments

    add_slurm_arguments(parser)
    return parser


def _check_counts(args: argparse.Namespace) -> None:
    if args.jobs < 1 or args.jobs > MAX_JOBS:
        raise SweepError(f"--jobs must be from 1 to {MAX_JOBS}, got {args.jobs}")
    if args.count is not None and args.count < 1:
        raise SweepError(f"--count must be at least 1, got {args.count}")


def _state_dir(args: argparse.Namespace, sweep: dict[str, Any]) -> Path:
    """--state, else runs/sweeps/<the sweep's name> (which must then be a plain name)."""
    if args.state is None:
        check_sweep_name(sweep, args.sweep)
    return Path(args.state) if args.state else default_state_dir(sweep, args.sweep)


def resume_command(args: argparse.Namespace) -> str:
    """The command that resumes this sweep: the same YAML with the options it was started with
    (--jobs, --count, --gpu, --nowandb, --state), so a resume runs the sweep the same way."""
    from text_recognizer.orchestration.slurm import DEFAULT_TIME_MIN

    words = ["python", "training/local_sweep.py", args.sweep]
    if args.jobs != 1:
        words += ["--jobs", str(args.jobs)]
    if args.count is not None:
        words += ["--count", str(args.count)]
    if args.gpu != "-1":
        words += ["--gpu", args.gpu]
    if args.state is not None:
        words += ["--state", args.state]
    if args.nowandb:
        words.append("--nowandb")
    if args.slurm:
        words.append("--slurm")
        defaults = {"gpus_per_run": 0, "cpus_per_run": 1, "time": DEFAULT_TIME_MIN}
        for flag in ("partition", "gpus_per_run", "cpus_per_run", "mem", "time"):
            value = getattr(args, flag)
            if value is not None and value != defaults.get(flag):
                words += [f"--{flag.replace('_', '-')}", str(value)]
    return shlex.join(words)


@command
def local_sweep_main(argv: list[str] | None = None) -> int:
    """Entry point of training/local_sweep.py: check everything, then run the sweep under its lock.

    Every bad input is one ``error:`` line and exit 2 before any trial starts; a Ctrl-C before the
    scheduler takes over signals is one line and exit 130. Output into a pipe whose reader has
    gone (``| head``, a ``| tee`` ended by the same Ctrl-C) moves to stderr (see LocalSweep.say).
    """
    args = _parser().parse_args(argv)
    state_dir: Path | None = None
    try:
        _check_counts(args)
        from text_recognizer.orchestration.slurm import check_slurm, options_from_args

        slurm = options_from_args(args)
        if args.array_parallelism is not None:
            raise UserError("--array-parallelism is for experiment files; a sweep runs --jobs")
        gpu = parse_gpu(args.gpu)
        sweep = load_sweep(args.sweep)
        check_sweep(sweep, args.sweep)
        checked = check_parameter_space(sweep, args.sweep)
        if args.check:
            print(f"{args.sweep}: valid ({checked} configs validated)")
            return 0
        state_dir = _state_dir(args, sweep)
        check_state_dir(state_dir)
        check_state_folder(state_dir, "--state folder" if args.state else "state folder")
        launcher = None
        if args.slurm:
            from text_recognizer.orchestration.slurm_trials import SlurmTrialLauncher

            check_slurm()
            launcher = SlurmTrialLauncher(slurm, state_dir)
        with state_lock(state_dir):
            runner = LocalSweep(
                sweep,
                args.sweep,
                state_dir,
                jobs=args.jobs,
                count=args.count,
                gpu=gpu,
                nowandb=args.nowandb,
                custom_state=args.state is not None,
                resume=resume_command(args),
                launcher=launcher,
            )
            runner.say(
                f"sweep {runner.state.name}: {sweep['method']} search, {runner.total} trials, "
                f"{args.jobs} at a time{' as Slurm jobs' if args.slurm else ''} ({checked} "
                f"configs validated); state in {state_dir}"
            )
            return runner.run()
    except UserError as e:
        return print_error(e)
    except BrokenPipeError:  # not the state folder: stdout's reader has gone (see @command)
        raise
    except OSError as e:  # the state folder cannot be made or written (full, read-only, ...)
        return print_error(storage_error(e, e.filename or state_dir or args.sweep))
    except KeyboardInterrupt:  # Ctrl-C before run() handles it (checking the YAML, recovering)
        progress.line("interrupted before any trial started")
        return 130
