"""The cost of tracking: the same run with W&B offline logging against ``--nowandb``.

Target (issue 5): a run with W&B offline logging is within 5 % of the same run with ``--nowandb``.
Both sides run ``training/run_experiment.py`` as a user would, on real MNIST digits when
``../shared/data/mnist`` is there (else the synthetic characters), with a fixed thread count.
Runs alternate (nowandb, offline, nowandb, offline, ...) so drifting machine load hits both sides;
the dataset cache is built before any timing. Reported: whole-process wall time (W&B's start-up
and sync-file writing included) and the training time alone (sum of the epochs' ``train_time``).

    python bench/bench_tracking.py [--quick] [--pairs 2] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

ROOT = _common.BENCH_DIR.parent


def config(epochs: int, quick: bool) -> dict:
    from text_recognizer.paths import SHARED_DATA_DIR

    mnist = SHARED_DATA_DIR / "mnist"
    if mnist.is_dir():
        dataset, args = "MnistDataset", {"data_dir": str(mnist), "test_set_only": True}
    else:
        dataset, args = "SyntheticCharactersDataset", {"num_train": 8000, "num_test": 2000}
    if quick:
        args["subsample_fraction"] = 0.25
    return {
        "experiment_group": "bench tracking",
        "dataset": dataset,
        "dataset_args": args,
        "model": "CharacterModel",
        "network": "lenet",
        "train_args": {"batch_size": 64, "epochs": epochs, "num_threads": 2},
    }


def one_run(cfg: dict, wandb: bool, work: Path, env: dict[str, str]) -> dict[str, float]:
    runs = Path(tempfile.mkdtemp(dir=work))
    run_env = {**env, "TEXT_RECOGNIZER_RUNS_DIR": str(runs), "HOME": str(work)}
    run_env.pop("WANDB_API_KEY", None)
    if wandb:
        run_env["WANDB_MODE"] = "offline"
    flags = [] if wandb else ["--nowandb"]
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, str(ROOT / "training" / "run_experiment.py"), json.dumps(cfg), *flags],
        env=run_env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"run failed ({out.returncode}): {out.stderr[-2000:]}")
    (metrics_path,) = runs.glob("*/*/metrics.jsonl")
    epochs = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
    return {"wall": wall, "train": sum(e["train_time"] for e in epochs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the data, 1 pair")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    env = _common.environment()
    _common.print_header("tracking overhead: W&B offline vs --nowandb", env)
    pairs = 1 if args.quick else args.pairs
    cfg = config(args.epochs, args.quick)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base_env = {**os.environ, "WANDB_SILENT": "true"}
        one_run({**cfg, "train_args": {**cfg["train_args"], "epochs": 1}}, False, work, base_env)
        results: dict[str, list[dict[str, float]]] = {"nowandb": [], "offline": []}
        for _ in range(pairs):
            results["nowandb"].append(one_run(cfg, False, work, base_env))
            results["offline"].append(one_run(cfg, True, work, base_env))
    summary = {
        side: {k: _common.median([r[k] for r in runs]) for k in ("wall", "train")}
        for side, runs in results.items()
    }
    print(f"\n{'side':10s} {'wall s':>8s} {'train s':>8s}   ({pairs} runs each, {cfg['dataset']})")
    for side, s in summary.items():
        print(f"{side:10s} {s['wall']:8.2f} {s['train']:8.2f}")
    print()
    wall_ratio = summary["nowandb"]["wall"] / summary["offline"]["wall"]
    train_ratio = summary["nowandb"]["train"] / summary["offline"]["train"]
    # speed ratios (nowandb time / offline time): >= 0.95 means offline costs at most ~5 %
    print(
        _common.ratio_line("tracking_overhead[whole run]", "nowandb/offline time", wall_ratio, 0.95)
    )
    print(
        _common.ratio_line("tracking_overhead[training]", "nowandb/offline time", train_ratio, 0.95)
    )
    _common.write_results(
        "bench_tracking", {"environment": env, "config": cfg, "runs": results, "summary": summary}
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
