"""``run_experiment``: train and test one model from a JSON config (inline or a path).

    python training/run_experiment.py training/experiments/quickstart.json
    python training/run_experiment.py CONFIG --train_args.epochs=1 --dataset_args.num_train=500
    python training/run_experiment.py CONFIG --print-config      # the resolved config; no training
    python training/run_experiment.py '{"dataset": "MnistDataset", ...}' --gpu=0 --nowandb
    python training/run_experiment.py --resume runs/<group>/<run>     # continue in place
    torchrun --nproc_per_node=2 training/run_experiment.py CONFIG      # DDP, batch_size per rank

Exit codes: 0 success (a ``--resume`` of a finished run: nothing to do, nothing changed), 1 the
run failed (recorded in runs/), 2 bad input (one-line message), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text_recognizer import progress


@dataclass
class ResumeTarget:
    """A run to continue: its folder (locked), recorded config, summary and loaded checkpoint."""

    run_dir: Path
    config: dict[str, Any]
    summary: dict[str, Any]
    state: dict[str, Any] | None


def run_experiment_main(argv: list[str] | None = None) -> int:
    from text_recognizer.config import is_override
    from text_recognizer.errors import one_line_parser

    parser = one_line_parser(
        usage="%(prog)s [CONFIG] [--KEY.SUB=VALUE ...] [--gpu N] [--no-save] [--keep-checkpoints] "
        "[--nowandb] [--print-config] [--resume RUN_DIR]",
        description="Train and test one model from a JSON experiment config.",
        epilog="Config keys: experiment_group, run_name, dataset, dataset_args, model, network, "
        "network_args, train_args (see README.md). Any key can be set on the command line: "
        "--train_args.epochs=1 --dataset_args.num_train=500 (values are JSON; a bare word is a "
        "string), checked exactly as in the file.",
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
        "--save",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the best weights as weights.pt in the run folder (the default; --no-save "
        "keeps none; a resume keeps the run's own choice unless given)",
    )
    parser.add_argument(
        "--keep-checkpoints",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep checkpoint.pt and checkpoint.prev.pt when the run finishes (default: removed "
        "then; interrupted and failed runs always keep them; a resume keeps the run's own choice "
        "unless given)",
    )
    parser.add_argument("--nowandb", action="store_true", help="do not log to Weights & Biases")
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run in place from its last checkpoint (runs/<group>/<run>)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (overrides and defaults applied, as config.json will "
        "hold it) and exit without training",
    )
    argv = sys.argv[1:] if argv is None else list(argv)
    settings = [a for a in argv if is_override(a)]
    args = parser.parse_args([a for a in argv if not is_override(a)])
    if args.config is None and args.resume is None:
        parser.error("give a CONFIG, or --resume RUN_DIR")

    from text_recognizer.errors import run_command
    from text_recognizer.run.records import release_locks

    try:
        # Ctrl-C before the run's own handler is in place is 130; running out of memory before
        # the run started (the data, the network) one line, exit 1 (once started, the run
        # records it as failed).
        return run_command(
            lambda: _run(args, settings), "lower num_train, the image size or the network's size"
        )
    finally:
        release_locks()  # a resume refused after taking its run's lock


def _run(args: argparse.Namespace, settings: list[str]) -> int:
    """Validate, then run with SIGTERM/SIGINT turned into an orderly ``interrupted`` (exit 130)."""
    from text_recognizer.config import load_config, parse_override
    from text_recognizer.errors import ConfigError, UserError

    if _torchrun_rank() > 0:  # torchrun: only rank 0 speaks
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the process's life)
    overrides = [parse_override(a) for a in settings]
    if args.resume is not None and settings:
        raise ConfigError(
            f"{settings[0]} cannot be given with --resume: a resumed run keeps the config it "
            f"started with (to train longer, raise train_args.epochs in "
            f"{Path(args.resume) / 'config.json'}; for other settings start a new run)"
        )
    if args.print_config:
        config = (
            _recorded_config(args.resume) if args.resume else load_config(args.config, overrides)
        )
        sys.stdout.write(json.dumps(config, indent=2) + "\n")
        return 0
    resume: ResumeTarget | None = None
    if args.resume is not None:
        resume = _resume_target(args.resume, args.config)
        if resume is None:  # it finished: nothing to do (said so), nothing changed
            return 0
        config = resume.config
    else:
        config = load_config(args.config, overrides)
    if args.gpu is not None and args.gpu < -1:
        raise UserError(f"--gpu must be -1 (any free GPU) or a GPU index >= 0, got {args.gpu}")
    if args.gpu is not None and args.gpu >= 0:
        from text_recognizer.leasing.devices import check_gpu_index

        check_gpu_index(args.gpu)  # NVML only: a wrong index fails before torch loads
    from text_recognizer.errors import Interrupted
    from text_recognizer.interrupts import interrupts_raised
    from text_recognizer.run.runner import run_experiment

    recorded = resume.summary if resume is not None else {}
    save = args.save if args.save is not None else recorded.get("save") is not False
    keep = args.keep_checkpoints
    if keep is None:
        keep = recorded.get("keep_checkpoints") is True
    try:
        with interrupts_raised():
            code, _ = run_experiment(
                config,
                gpu=args.gpu,
                save=save,
                use_wandb=not args.nowandb,
                resume_dir=resume.run_dir if resume is not None else None,
                resume_state=resume.state if resume is not None else None,
                keep_checkpoints=keep,
            )
    except (KeyboardInterrupt, Interrupted):  # e.g. while waiting for a GPU lease
        progress.line("interrupted before the run started")
        return 130
    return code


def _recorded_config(run_dir_arg: str) -> dict[str, Any]:
    """A run folder's config.json, validated (``--resume RUN --print-config``; no lock taken)."""
    from text_recognizer.config import validate_config
    from text_recognizer.errors import ConfigError
    from text_recognizer.run.records import read_record_json

    config_path = Path(run_dir_arg).expanduser() / "config.json"
    if not _is_file(config_path):
        raise ConfigError(f"{run_dir_arg} is not a run folder (no config.json)")
    try:
        return validate_config(read_record_json(config_path))
    except ConfigError as e:
        raise ConfigError(f"{config_path}: {e}") from None


def _resume_target(run_dir_arg: str, config_arg: str | None) -> ResumeTarget | None:
    """The run folder (locked), its recorded config, summary and newest readable checkpoint
    (None: none); None itself when the run finished and there is nothing to do (said in one line).
    """
    from text_recognizer.config import load_config, validate_config
    from text_recognizer.errors import ConfigError
    from text_recognizer.run.records import (
        CHECKPOINT_NAMES,
        config_digest,
        lock_run,
        read_record_json,
    )

    run_dir = Path(run_dir_arg).expanduser()
    config_path, summary_path = run_dir / "config.json", run_dir / "summary.json"
    if not all(_is_file(p) for p in (config_path, summary_path)):
        raise ConfigError(f"{run_dir} is not a run folder (no config.json and summary.json)")
    if _torchrun_rank() == 0:  # only rank 0 writes the record, so only it holds the lock
        lock_run(run_dir)  # refused (exit 2) while another process still runs it
    recorded = read_record_json(config_path)
    summary = read_record_json(summary_path)  # corrupt: refused now, not after the data loaded
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
    finished = summary.get("status") == "finished"
    if finished and not any(_is_file(run_dir / name) for name in CHECKPOINT_NAMES):
        # Its checkpoints were removed when it finished: it can be reported, not continued.
        if summary.get("config_digest") not in (None, config_digest(recorded)):
            raise ConfigError(
                f"{config_path} was edited after the run finished, but its checkpoints were "
                "removed then (--keep-checkpoints keeps them), so it cannot train further; undo "
                f'the edit, or start a new run ("init_from": "{run_dir}" starts from its '
                "weights)"
            )
        progress.line(_finished_line(run_dir, summary, checkpoints=False))
        return None
    from text_recognizer.models.training import check_checkpoint
    from text_recognizer.run.checkpoint import Checkpointer  # torch: only once the input is sound

    state = Checkpointer(run_dir, check_checkpoint).load()
    if state is not None:
        _check_edits(config, state, config_path)
    unchanged = summary.get("config_digest") == config_digest(recorded)
    # Finished, and config.json as it finished: final, even where only an older checkpoint is
    # readable (it would retrain the last epoch and overwrite the record).
    if finished and (state is None or state["done"] or unchanged):
        early = state is not None and state["epoch"] < config["train_args"]["epochs"]
        progress.line(_finished_line(run_dir, summary, checkpoints=True, stopped_early=early))
        return None
    return ResumeTarget(run_dir, config, summary, state)


def _finished_line(
    run_dir: Path, summary: dict[str, Any], checkpoints: bool, stopped_early: bool = False
) -> str:
    """What ``--resume`` of a finished run says: its result, and how it could train on."""
    scores = [
        f"{k} {v:.4f}"
        for k, v in summary.items()
        if k.startswith("test_") and isinstance(v, float) and k != "test_loss"
    ][:2]
    result = f" ({', '.join(scores)})" if scores else ""
    if stopped_early:
        how = "it stopped early (train_args.early_stopping_patience); to train on, start a new run"
    elif checkpoints:
        how = f"to train it further, raise train_args.epochs in {run_dir / 'config.json'}"
    else:
        how = "its resume checkpoints were removed when it finished; to train on, start a new run"
        if _is_file(run_dir / "weights.pt"):
            how += f' from its weights ("init_from": "{run_dir}")'
    return f"{run_dir} finished already{result}: nothing to resume, nothing changed; {how}"


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
