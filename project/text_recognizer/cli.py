"""``run_experiment``: train and test one model from a JSON config (inline or a path).

    python training/run_experiment.py training/experiments/quickstart.json
    python training/run_experiment.py '{"dataset": "MnistDataset", ...}' --gpu=0 --save
    python training/run_experiment.py --resume runs/<group>/<run>     # continue in place
    torchrun --nproc_per_node=2 training/run_experiment.py CONFIG      # DDP, batch_size per rank

Exit codes: 0 success, 1 the run failed (recorded in runs/), 2 bad input (one-line message).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any


def run_experiment_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
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
    if int(os.environ.get("RANK", "0")) > 0:  # torchrun: only rank 0 speaks
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115 (for the process's life)

    from text_recognizer.config import load_config
    from text_recognizer.errors import UserError, print_error

    try:
        resume_dir, resume_state = None, None
        if args.resume is not None:
            resume_dir, config, resume_state = _resume_target(args.resume, args.config)
        else:
            config = load_config(args.config)
        if args.gpu is not None and args.gpu < -1:
            raise UserError(f"--gpu must be -1 (any free GPU) or a GPU index >= 0, got {args.gpu}")
        if args.gpu is not None and args.gpu >= 0:
            from text_recognizer.experiment.devices import check_gpu_index

            check_gpu_index(args.gpu)  # NVML only: a wrong index fails before torch loads
        from text_recognizer import checkpoint
        from text_recognizer.experiment.runner import Interrupted, run_experiment

        def on_signal(signum: int, frame: Any) -> None:
            if checkpoint.deferring():  # a checkpoint is being written: interrupt right after
                checkpoint.defer(signum)
                return
            raise Interrupted()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            code, _ = run_experiment(
                config,
                gpu=args.gpu,
                save=args.save,
                use_wandb=not args.nowandb,
                resume_dir=resume_dir,
                resume_state=resume_state,
            )
        except (KeyboardInterrupt, Interrupted):  # e.g. while waiting for a GPU lease
            print("interrupted before the run started", file=sys.stderr)
            return 130
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return code
    except UserError as e:
        return print_error(e)


def _resume_target(
    run_dir_arg: str, config_arg: str | None
) -> tuple[Path, dict[str, Any], dict[str, Any] | None]:
    """The run folder, its recorded config and its newest readable checkpoint (None: none yet)."""
    from text_recognizer.checkpoint import Checkpointer
    from text_recognizer.config import load_config
    from text_recognizer.errors import ConfigError

    run_dir = Path(run_dir_arg).expanduser()
    config_path, summary_path = run_dir / "config.json", run_dir / "summary.json"
    if not run_dir.is_dir() or not config_path.is_file() or not summary_path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no config.json and summary.json)")
    try:
        recorded = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{config_path} is not valid JSON ({e})") from None
    if config_arg is not None:
        given = load_config(config_arg)
        key = first_difference(recorded, given)
        if key is not None:
            raise ConfigError(
                f"the config given differs from the one recorded in {config_path} at {key!r}; "
                "drop the config to resume, or start a new run"
            )
    return run_dir, load_config(json.dumps(recorded)), Checkpointer(run_dir).load()


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
