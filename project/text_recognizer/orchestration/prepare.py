"""``prepare_experiments``: one shell command per experiment of a file, ready for GNU parallel.

    python training/prepare_experiments.py training/experiments/sample.json | parallel -j2
    python training/prepare_experiments.py training/experiments/sample.json --slurm [--wait]

The file is ``{"experiment_group": ..., "experiments": [config, ...]}``. Every experiment is
validated before anything is printed, so a typo in the fifth experiment never leaves four runs
going and a half-done group; the group travels into each config. Each line is quoted with
``shlex``, so any JSON (quotes, ``$``, ``{}``) reaches run_experiment.py unchanged. With
``--slurm`` the same commands go to Slurm as one job array instead (``orchestration/slurm.py``).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from text_recognizer.errors import (
    ConfigError,
    UserError,
    command,
    one_line,
    one_line_parser,
)
from text_recognizer.fileio import read_small_text

FILE_KEYS = ("experiment_group", "experiments")
RUN_SCRIPT = "training/run_experiment.py"
MAX_FILE_BYTES = 16 << 20
MAX_DEPTH = 32  # a config nests 3 levels; deeper is not a config (and would overflow the stack)


def nesting_depth(data: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply lists and dicts nest in ``data`` (iterative, so any depth is safe to ask about);
    stops counting past ``limit``."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children)
    return deepest


def read_experiments_file(path: str | Path) -> tuple[str | None, list[Any]]:
    """Parse the file; return (group, raw experiments) or raise ConfigError with one line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiments file {str(path)!r} does not exist")
    text = read_small_text(path, MAX_FILE_BYTES, "experiments file", ConfigError)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"malformed JSON in {path}: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply (at most {MAX_DEPTH} levels)") from None
    if nesting_depth(data) > MAX_DEPTH:
        raise ConfigError(f"{path}: nested too deeply (at most {MAX_DEPTH} levels)")
    shape = '{"experiment_group": "...", "experiments": [{...}, ...]}'
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object {shape}, got {type(data).__name__}")
    for key in data:
        if key not in FILE_KEYS:
            raise ConfigError(f"{path}: unknown key {key!r} (valid: {', '.join(FILE_KEYS)})")
    group = data.get("experiment_group")
    if group is not None and not isinstance(group, str):
        raise ConfigError(f"{path}: experiment_group must be a string, got {group!r}")
    experiments = data.get("experiments")
    if not isinstance(experiments, list) or not experiments:
        raise ConfigError(f"{path}: 'experiments' must be a non-empty list of configs ({shape})")
    return group, experiments


def prepare_configs(path: str | Path) -> list[dict[str, Any]]:
    """The experiments with the group filled in, all validated; else ConfigError listing the bad
    ones, one line each (``experiments[2]: unknown key 'foo' in network_args ...``)."""
    from text_recognizer.config import validate_config

    group, experiments = read_experiments_file(path)
    configs, errors = [], []
    for i, experiment in enumerate(experiments):
        where = f"experiments[{i}]"
        if not isinstance(experiment, dict):
            errors.append(f"{where} must be a JSON object, got {type(experiment).__name__}")
            continue
        config = dict(experiment)
        if group is not None:
            own = config.get("experiment_group", group)
            if own != group:
                errors.append(
                    f"{where}: experiment_group {own!r} differs from the file's {group!r} "
                    "(leave it out: the file's group is used)"
                )
                continue
            config = {"experiment_group": group, **config}
        try:
            validate_config(config)
        except ConfigError as e:
            errors.append(one_line(f"{where}: {e}"))
            continue
        configs.append(config)
    if errors:
        raise ConfigError("\n".join(errors))
    return configs


def command_line(
    config: dict[str, Any],
    python: str = "python",
    script: str = RUN_SCRIPT,
    gpu: int = -1,
    save: bool = False,
    nowandb: bool = False,
) -> str:
    """One shell-quoted command line that runs ``config``."""
    text = json.dumps(config, separators=(",", ":"))
    words = [*shlex.split(python), script, f"--gpu={gpu}", text]
    words += ["--save"] if save else []
    words += ["--nowandb"] if nowandb else []
    return shlex.join(words)


@command
def prepare_experiments_main(argv: list[str] | None = None) -> int:
    """Print one command per experiment on stdout; errors go to stderr only (exit 2)."""
    parser = one_line_parser(
        prog="prepare_experiments.py",
        description="Print one shell command per experiment of an experiments file, for GNU "
        "parallel: prepare_experiments.py FILE | parallel -j2",
    )
    parser.add_argument(
        "experiments_file", help='JSON: {"experiment_group": ..., "experiments": [...]}'
    )
    parser.add_argument("--save", action="store_true", help="pass --save to every run")
    parser.add_argument("--nowandb", action="store_true", help="pass --nowandb to every run")
    parser.add_argument(
        "--python",
        default=None,
        help="interpreter in the commands (default: python; with --slurm this interpreter; "
        "e.g. a virtualenv's python on other hosts)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="with --slurm: wait for the runs, print their table, exit with the number failed",
    )
    from text_recognizer.orchestration.slurm import add_slurm_arguments, options_from_args

    add_slurm_arguments(parser)
    args = parser.parse_args(argv)
    try:
        if args.wait and not args.slurm:
            raise UserError("--wait needs --slurm")
        options = options_from_args(args)
        configs = prepare_configs(args.experiments_file)
        if args.slurm:
            from text_recognizer.orchestration.slurm import submit_experiments

            return submit_experiments(
                configs, options, args.python, args.save, args.nowandb, args.wait, RUN_SCRIPT
            )
    except UserError as e:
        for line in str(e).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return e.exit_code
    lines = [
        command_line(c, python=args.python or "python", save=args.save, nowandb=args.nowandb)
        for c in configs
    ]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return 0
