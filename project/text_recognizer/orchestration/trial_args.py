"""One sweep trial's arguments: what ``wandb agent`` (or ``local_sweep.py``) passes to
training/run_sweep.py, turned into one validated experiment config, and run_sweep's command.

The agent runs the sweep YAML's command, ``${env} ${interpreter} ${program} ${args}``, which becomes

    python training/run_sweep.py --config=training/experiments/mnist_mlp.json \\
        --network_args.layer_size=256 --train_args.batch_size=64

one ``--dotted.key=value`` per sweep parameter. Everything the sweep does not vary lives in one place:
the experiment JSON named by the ``config`` parameter (a fixed ``value:`` in the YAML, so the agent
passes it like any other parameter and W&B records it), or ``DEFAULT_BASE_CONFIG`` when the YAML names
none. Defaults for keys the JSON leaves out come from ``config.py`` and the registries, as for any run.

Values are parsed as JSON, then as Python literals (the agent formats values with ``str()``, so a
boolean arrives as ``True`` and a list of strings as ``['a', 'b']``), else kept as strings. A dict
value (W&B's nested ``parameters:`` form) is merged into the section it names. The parsing and
setting are ``config.override_value`` and ``config.apply_overrides``, which run_experiment's
``--train_args.epochs=1`` settings use too.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from text_recognizer import progress
from text_recognizer.config import apply_overrides, override_value
from text_recognizer.errors import ConfigError, UserError, command, print_error, storage_error

DEFAULT_BASE_CONFIG = "training/experiments/emnist_mlp.json"
# run_sweep's own flags; every other --key=value is a config key.
FLAGS = ("config", "gpu", "nowandb", "save", "no-save", "keep-checkpoints", "no-keep-checkpoints")

USAGE = """\
usage: run_sweep.py [--config=BASE.json] [--gpu=N|cpu] [--nowandb] [--no-save]
                    [--keep-checkpoints] [--KEY.SUB=VALUE ...]

Run one sweep trial: the base experiment config (--config, default {default}) with every
--KEY.SUB=VALUE set in it (e.g. --network_args.layer_size=256 --train_args.batch_size=64).
Values are JSON or Python literals (256, 0.2, true/True, [32, 64]); anything else is a string.
--gpu defaults to -1 (lease any free GPU, else the CPU with a notice); --gpu=cpu forces the CPU.
A trial keeps its best weights (weights.pt) as every run does unless --no-save (or --save=false),
and drops its resume checkpoints when it finishes unless --keep-checkpoints; as flags or as sweep
parameters (`no-save: {{value: true}}`), each passed on to run_experiment.
Exit codes as run_experiment.py: 0 finished, 1 the run failed, 2 bad input."""


@dataclass
class TrialArgs:
    """run_sweep's command line, parsed: the base config, the overrides and the run flags."""

    base: str = DEFAULT_BASE_CONFIG
    overrides: list[tuple[str, Any]] = field(default_factory=list)
    gpu: int | None = -1
    nowandb: bool = False
    save: bool | None = None  # None: run_experiment's default (weights.pt kept)
    keep_checkpoints: bool | None = None  # None: run_experiment's default (dropped at the end)


def format_arg(key: str, value: Any) -> str:
    """One argument exactly as ``wandb agent`` formats it for ``${args}``: ``--key=str(value)``."""
    return f"--{key}={value}"


def _flag_bool(key: str, value: str | None) -> bool:
    if value is None:
        return True
    parsed = override_value(value)
    if isinstance(parsed, bool):
        return parsed
    raise UserError(f"--{key} takes no value or true/false, got {value!r}")


def parse_trial_args(argv: list[str]) -> TrialArgs:
    """Split run_sweep's arguments into flags and dotted config overrides (the last one wins)."""
    args = TrialArgs()
    for arg in argv:
        if not arg.startswith("--") or arg == "--":
            raise UserError(
                f"unexpected argument {arg!r}: run_sweep.py takes --KEY=VALUE arguments "
                "(e.g. --network_args.layer_size=256)"
            )
        key, eq, raw = arg[2:].partition("=")
        value = raw if eq else None
        if not key:
            raise UserError(f"empty key in argument {arg!r}")
        if key == "config":
            if not value:
                raise UserError("--config needs a path to a base experiment .json file")
            args.base = value
        elif key == "gpu":
            args.gpu = parse_gpu(value)
        elif key in ("nowandb", "save", "keep-checkpoints"):
            setattr(args, key.replace("-", "_"), _flag_bool(key, value))
        elif key in ("no-save", "no-keep-checkpoints"):
            setattr(args, key[3:].replace("-", "_"), not _flag_bool(key, value))
        else:
            args.overrides.append((key, True if value is None else override_value(value)))
    return args


def parse_gpu(value: str | None) -> int | None:
    """``--gpu``: None for the CPU (cpu/none/null), -1 for any free GPU, else a GPU index."""
    if value is None or value.strip().lower() in ("cpu", "none", "null"):
        return None
    try:
        gpu = int(value)
    except ValueError:
        gpu = -2
    if gpu < -1:
        raise UserError(f"--gpu must be -1 (any free GPU), a GPU index >= 0 or cpu, got {value!r}")
    return gpu


def resolve_path(path: str) -> Path:
    """A relative path is looked up from the current folder, then from the project root."""
    from text_recognizer.paths import PROJECT_ROOT

    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    return PROJECT_ROOT / p if (PROJECT_ROOT / p).exists() else p


def load_base_config(path: str) -> dict[str, Any]:
    """The base experiment config a sweep varies (an experiments/*.json file)."""
    from text_recognizer.config import parse_config_text
    from text_recognizer.orchestration.prepare import MAX_DEPTH, nesting_depth

    resolved = resolve_path(path)
    if not resolved.is_file():
        raise ConfigError(
            f"base config {path!r} does not exist (the sweep's `config` parameter names an "
            "experiment .json file, relative to the current folder or the project root)"
        )
    try:
        base = parse_config_text(str(resolved))
    except RecursionError:
        base = None
    except UnicodeDecodeError:
        raise ConfigError(f"base config {path!r} is not UTF-8 text") from None
    except OSError as e:
        raise storage_error(e, resolved, "read") from None
    if base is None or nesting_depth(base) > MAX_DEPTH:
        raise ConfigError(f"base config {path!r} is nested too deeply (at most {MAX_DEPTH} levels)")
    if "experiments" in base:
        raise ConfigError(
            f"base config {path!r} is an experiments file (with 'experiments'); a sweep needs "
            "one experiment config"
        )
    return base


def trial_config(args: TrialArgs, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The unvalidated config of one trial: the base config with every override set in it.

    Under ``wandb agent`` (``WANDB_SWEEP_ID`` set) the runs of one sweep share the group
    ``sweep-<id>`` unless the sweep sets ``experiment_group`` itself, so their local records sit
    together under runs/sweep-<id>/.
    """
    env = os.environ if env is None else env
    config = apply_overrides(load_base_config(args.base), args.overrides)
    sweep_id = env.get("WANDB_SWEEP_ID")
    if sweep_id and not any(k == "experiment_group" for k, _ in args.overrides):
        config["experiment_group"] = f"sweep-{sweep_id}"
    return config


def resolve_trial(argv: list[str]) -> tuple[dict[str, Any], TrialArgs]:
    """Parse and validate a trial's arguments; a ConfigError names the bad parameter."""
    from text_recognizer.config import validate_config

    args = parse_trial_args(argv)
    config = trial_config(args)
    validate_config(config)
    return config, args


@command
def run_sweep_main(argv: list[str] | None = None) -> int:
    """Entry point of training/run_sweep.py: validate, then run the experiment in this process.

    Running in-process (through ``run_experiment``'s own command-line entry) keeps one process per
    trial, so the agent's or local_sweep's SIGTERM reaches the training loop directly.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE.format(default=DEFAULT_BASE_CONFIG))
        return 0
    try:
        config, args = resolve_trial(argv)
    except UserError as e:
        return print_error(e)
    progress.line(
        "sweep trial: "
        + " ".join(format_arg(k, v) for k, v in args.overrides)
        + f" over {args.base}"
    )
    from text_recognizer.run.cli import run_experiment_main

    cli_args = [json.dumps(config)]
    if args.gpu is not None:
        cli_args.append(f"--gpu={args.gpu}")
    if args.nowandb:
        cli_args.append("--nowandb")
    if args.save is not None:
        cli_args.append("--save" if args.save else "--no-save")
    if args.keep_checkpoints is not None:
        cli_args.append("--keep-checkpoints" if args.keep_checkpoints else "--no-keep-checkpoints")
    return run_experiment_main(cli_args)
