"""``run_experiment``: train and test one model from a JSON config (inline or a path).

    python training/run_experiment.py training/experiments/quickstart.json
    python training/run_experiment.py '{"dataset": "MnistDataset", ...}' --gpu=0 --save
    python training/run_experiment.py --resume runs/<group>/<run>     # continue in place
    torchrun --nproc_per_node=2 training/run_experiment.py CONFIG      # DDP, batch_size per rank

Exit codes: 0 success, 1 the run failed (recorded in runs/), 2 bad input (one-line message),
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from text_recognizer import progress


def run_experiment_main(argv: list[str] | None = None) -> int:
    from text_recognizer.errors import one_line_parser

    parser = one_line_parser(
        description="Train and test one model from a JSON experiment config.",
        epilog="Config keys: experiment_group, run_name, dataset, dataset_args, model, network, "
        "network_args, train_args (see README.md).",
    )
    parser.add_argument(
        "config",
        nargs="?",
        help="JSON object, or a path to a .json file (optional with --resume)",
    )
    parser.add_argument(
        "--gpu",
        type=int,
        default=None,
        help="GPU index to use; -1 picks a free GPU; omitted = CPU (no GPU = CPU with a notice)",
    )
    parser.add_argument(
        "--save", action="store_true", help="save the best weights in the run folder"
    )
    parser.add_argument("--nowandb", action="store_true", help="do not log to Weights & Biases")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run in place from its last checkpoint (runs/<group>/<run>)",
    )
    args = parser.parse_args(argv)
    if args.config is None and args.resume is None:
        parser.error("give a CONFIG, or --resume RUN_DIR")

    from text_recognizer.errors import run_command
    from text_recognizer.run.records import release_locks

    try:
        # Ctrl-C before the run's own handler is in place is 130; running out of memory before
        # the run started (the data, the network) one line, exit 1 (once started, the run
        # records it as failed).
        return run_command(
            lambda: _run(args), "lower num_train, the image size or the network's size"
        )
    finally:
        release_locks()  # a resume refused after taking its run's lock


def _run(args: argparse.Namespace) -> int:
    """Validate, then run with SIGTERM/SIGINT turned into an orderly ``interrupted`` (exit 130)."""
    from text_recognizer.config import load_config
    from text_recognizer.errors import UserError

    if _torchrun_rank() > 0:  # torchrun: only rank 0 speaks
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the process's life)
    resume_dir, resume_state = None, None
    if args.resume is not None:
        resume_dir, config, resume_state = _resume_target(args.resume, args.config)
    else:
        config = load_config(args.config)
    if args.gpu is not None and args.gpu < -1:
        raise UserError(f"--gpu must be -1 (any free GPU) or a GPU index >= 0, got {args.gpu}")
    if args.gpu is not None and args.gpu >= 0:
        from text_recognizer.leasing.devices import check_gpu_index

        check_gpu_index(args.gpu)  # NVML only: a wrong index fails before torch loads
    from text_recognizer.errors import Interrupted
    from text_recognizer.interrupts import interrupts_raised
    from text_recognizer.run.runner import run_experiment

    try:
        with interrupts_raised():
            code, _ = run_experiment(
                config,
                gpu=args.gpu,
                save=args.save,
                use_wandb=not args.nowandb,
                resume_dir=resume_dir,
                resume_state=resume_state,
            )
    except (KeyboardInterrupt, Interrupted):  # e.g. while waiting for a GPU lease
        progress.line("interrupted before the run started")
        return 130
    return code


def _resume_target(
    run_dir_arg: str, config_arg: str | None
) -> tuple[Path, dict[str, Any], dict[str, Any] | None]:
    """The run folder (locked), its recorded config and newest readable checkpoint (None: none)."""
    from text_recognizer.config import load_config, validate_config
    from text_recognizer.errors import ConfigError
    from text_recognizer.run.records import lock_run, read_record_json

    run_dir = Path(run_dir_arg).expanduser()
    config_path, summary_path = run_dir / "config.json", run_dir / "summary.json"
    if not all(_is_file(p) for p in (config_path, summary_path)):
        raise ConfigError(f"{run_dir} is not a run folder (no config.json and summary.json)")
    if _torchrun_rank() == 0:  # only rank 0 writes the record, so only it holds the lock
        lock_run(run_dir)  # refused (exit 2) while another process still runs it
    recorded = read_record_json(config_path)
    read_record_json(summary_path)  # corrupt: refused now, not after the data has loaded
    try:
        config = validate_config(recorded)
    except ConfigError as e:
        raise ConfigError(f"{config_path}: {e}") from None
    if config_arg is not None:
        given = load_config(config_arg)
        key = first_difference(recorded, given)
        if key is not None:
            raise ConfigError(
                f"the config given differs from the one recorded in {config_path} at {key!r}; "
                "drop the config to resume, or start a new run"
            )
    from text_recognizer.models.training import check_checkpoint
    from text_recognizer.run.checkpoint import Checkpointer  # torch: only once the input is sound

    state = Checkpointer(run_dir, check_checkpoint).load()
    if state is not None:
        _check_edits(config, state, config_path)
    return run_dir, config, state


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


def _check_edits(recorded: dict[str, Any], state: dict[str, Any], config_path: Path) -> None:
    """Refuse a config.json edited since the checkpoint, except a new ``train_args.epochs``.

    Both configs are compared resolved (defaults filled in), so deleting a key is an edit to its
    default, not a way around the check. A higher epoch count continues the run to it (a finished
    run included); a lower one than the epochs done, or any change under a cosine schedule
    (planned over the old count), is refused.
    """
    from text_recognizer.config import validate_config
    from text_recognizer.errors import ConfigError

    if "config" not in state:
        return  # a checkpoint from before configs were kept in it: nothing to compare with
    try:
        trained = validate_config(json.loads(state["config"]))
    except (TypeError, ValueError, RecursionError, ConfigError):
        raise ConfigError(
            f"the checkpoint in {config_path.parent} holds a config this version cannot read; "
            "start a new run"
        ) from None
    old, new = trained["train_args"]["epochs"], recorded["train_args"]["epochs"]
    same_epochs = {**trained, "train_args": {**trained["train_args"], "epochs": new}}
    key = first_difference(same_epochs, recorded)
    if key is not None:
        raise ConfigError(
            f"{config_path} was edited at {key!r} after the run started; a resume may change only "
            "train_args.epochs (undo the edit, or start a new run with the new config)"
        )
    if new == old:
        return
    done, schedule = state["epoch"], trained["train_args"].get("lr_schedule")
    if new < done:
        raise ConfigError(
            f"{config_path} sets train_args.epochs to {new}, but the run has trained {done} "
            f"epochs already; give at least {done}, or start a new run"
        )
    if schedule != "constant":
        raise ConfigError(
            f"{config_path} changes train_args.epochs from {old} to {new}, but the {schedule} "
            f"learning-rate schedule was planned over {old} epochs; undo the edit, or start a "
            "new run"
        )
    if state["done"] and done == old:  # it finished (not an early stop): train on
        state["done"] = False
    progress.line(f"train_args.epochs changed from {old} to {new}: training to epoch {new}")


def _torchrun_rank() -> int:
    """This process's torchrun RANK (0 outside torchrun); a malformed one is bad input."""
    from text_recognizer.errors import UserError

    values = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    for key, value in values.items():
        if value is not None and not (value.isascii() and value.isdigit() and len(value) < 7):
            raise UserError(f"{key}={value[:20]!r} must be a small integer >= 0 (torchrun sets it)")
    rank, world = int(values["RANK"] or 0), int(values["WORLD_SIZE"] or 1)
    if values["RANK"] is not None and values["WORLD_SIZE"] is not None and rank >= world:
        raise UserError(f"RANK={rank} must be less than WORLD_SIZE={world} (torchrun sets them)")
    if values["RANK"] is not None and world > 1:  # the ranks meet at MASTER_ADDR:MASTER_PORT
        addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
        if not addr.strip() or not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
            raise UserError(
                f"WORLD_SIZE={world} needs MASTER_ADDR (a host) and MASTER_PORT (1-65535), got "
                f"{addr[:40]!r} and {port[:20]!r}; start the ranks with torchrun, which sets them"
            )
    return rank


def first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """The dotted path of the first key where two configs differ, or None if they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if key not in a or key not in b:
                return f"{prefix}{key}"
            inner = first_difference(a[key], b[key], f"{prefix}{key}.")
            if inner is not None:
                return inner
        return None
    return None if a == b else prefix.rstrip(".")


if __name__ == "__main__":
    sys.exit(run_experiment_main())
