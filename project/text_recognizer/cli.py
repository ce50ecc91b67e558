"""``run_experiment``: train and test one model from a JSON config (inline or a path).

    python training/run_experiment.py training/experiments/quickstart.json
    python training/run_experiment.py '{"dataset": "MnistDataset", ...}' --gpu=0 --save

Exit codes: 0 success, 1 the run failed (recorded in runs/), 2 bad input (one-line message).
"""

from __future__ import annotations

import argparse
import signal
import sys


def run_experiment_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train and test one model from a JSON experiment config.",
        epilog="Config keys: experiment_group, run_name, dataset, dataset_args, model, network, "
        "network_args, train_args (see README.md).",
    )
    parser.add_argument("config", help="JSON object, or a path to a .json file")
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
    args = parser.parse_args(argv)

    from text_recognizer.config import load_config
    from text_recognizer.errors import UserError

    try:
        config = load_config(args.config)
        if args.gpu is not None and args.gpu < -1:
            raise UserError(f"--gpu must be -1 (any free GPU) or a GPU index >= 0, got {args.gpu}")
        if args.gpu is not None and args.gpu >= 0:
            from text_recognizer.experiment.devices import check_gpu_index

            check_gpu_index(args.gpu)  # NVML only: a wrong index fails before torch loads
        from text_recognizer.experiment.runner import Interrupted, run_experiment

        def on_term(signum, frame):
            raise Interrupted()

        signal.signal(signal.SIGTERM, on_term)
        try:
            code, _ = run_experiment(
                config, gpu=args.gpu, save=args.save, use_wandb=not args.nowandb
            )
        except (KeyboardInterrupt, Interrupted):  # e.g. while waiting for a GPU lease
            print("interrupted before the run started", file=sys.stderr)
            return 130
        return code
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(run_experiment_main())
