"""Training throughput: the platform's ``CharacterModel.fit`` versus a bare PyTorch loop.

Both sides train the same network (``build_network``, same seed, so the same initial weights), with
Adam at the same learning rate, the same batch size and the same torch thread settings, on the same
28x28 images (the platform's synthetic characters, made in memory).

- platform: ``CharacterModel.fit`` on a small dataset object holding uint8 ``x_train`` / int64
  ``y_train`` numpy arrays and an EMPTY validation split, so ``fit`` never calls ``evaluate`` (in
  ``base.py`` an epoch's ``epoch_time`` is measured after validation, so with a validation split it
  would include it). Everything else ``fit`` does per step and per epoch is counted: the shuffled
  uint8 gather and cast, the non-finite checks and gradient norm, the (disabled) GradScaler,
  LambdaLR, the train accuracy, the progress bar, the best-weights copy and the epoch line. The figure is the wall time
  between ``on_epoch_end`` callbacks, minus the time spent inside the callback (see below).
- bare: ``for i in range(0, n, bs): loss = F.cross_entropy(net(x[i:i+bs]), y[i:i+bs]);
  opt.zero_grad(); loss.backward(); opt.step()`` over float tensors prepared in memory beforehand
  (already divided by 255, no shuffling).

The two are interleaved epoch by epoch: each platform epoch's ``on_epoch_end`` runs one bare epoch
(timed on its own, excluded from the platform's figure), so every pair ran under the same machine
load. Epoch 1 of each side is warm-up and excluded. Throughput = samples / second over epochs 2..E;
the ratio reported is the median over all (platform epoch, bare epoch) pairs of bare_time /
platform_time, i.e. platform throughput / bare throughput. The ratio of median throughputs over
repetitions is printed too.

    python bench/bench_training.py            # ~45 s on 2 cores (up to ~2.5 min on a busy box)
    python bench/bench_training.py --quick    # ~15 s
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from types import SimpleNamespace
from typing import Any

import _common
import numpy as np

TARGET = 0.95
CASES: dict[str, dict[str, int]] = {
    # samples per epoch: full run, --quick run
    "mlp": {"batch_size": 256, "n": 20480, "quick_n": 10240},
    "lenet": {"batch_size": 128, "n": 768, "quick_n": 384},
}


def bare_epoch(net, optimizer, x, y, batch_size: int) -> float:
    """One epoch of the textbook loop; returns its wall time."""
    import torch.nn.functional as F

    start = time.perf_counter()
    for i in range(0, len(x), batch_size):
        loss = F.cross_entropy(net(x[i : i + batch_size]), y[i : i + batch_size])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def run_pair(
    network: str,
    batch_size: int,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    threads: int,
    seed: int,
) -> dict[str, Any]:
    """One ``fit`` of ``epochs`` epochs with a bare epoch run after each platform epoch."""
    import torch

    from text_recognizer.config import TrainArgs, validate_config
    from text_recognizer.models.character_model import CharacterModel
    from text_recognizer.networks import build_network

    config = validate_config(
        {
            "dataset": "SyntheticCharactersDataset",
            "model": "CharacterModel",
            "network": network,
            "train_args": {
                "batch_size": batch_size,
                "epochs": epochs,
                "num_threads": threads,
                "seed": seed,
                "optimizer": "adam",
            },
        }
    )
    train_args = TrainArgs.from_config(config["train_args"])
    data_config = {
        "input_shape": list(x.shape[1:]),
        "output_shape": [_common.NUM_CLASSES],
        "mapping": [str(i) for i in range(_common.NUM_CLASSES)],
    }
    torch.manual_seed(seed)
    model = CharacterModel(data_config, network, config["network_args"], "cpu")
    torch.manual_seed(seed)
    net = build_network(
        network, tuple(x.shape[1:]), (_common.NUM_CLASSES,), **config["network_args"]
    )
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=train_args.learning_rate)
    x_float = torch.from_numpy(x).float().div_(255)
    y_long = torch.from_numpy(y)
    dataset = SimpleNamespace(x_train=x, y_train=y, x_val=x[:0], y_val=y[:0])

    platform_wall: list[float] = []
    bare_times: list[float] = []
    mark = [0.0]

    def on_epoch_end(metrics: dict[str, Any]) -> None:
        platform_wall.append(time.perf_counter() - mark[0])
        bare_times.append(bare_epoch(net, optimizer, x_float, y_long, batch_size))
        mark[0] = time.perf_counter()

    # fit's per-epoch lines go to stderr; keep them (their cost is counted) out of the report
    with contextlib.redirect_stderr(io.StringIO()):
        mark[0] = time.perf_counter()
        history = model.fit(dataset, train_args, on_epoch_end=on_epoch_end)
    return {
        "platform_epoch_wall_s": platform_wall,
        "platform_epoch_time_s": [m["epoch_time"] for m in history],
        "bare_epoch_s": bare_times,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller, faster run (~15 s)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra- and inter-op threads (default 1)"
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3, quick 2)")
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs per fit (default 5, quick 3)"
    )
    parser.add_argument("--networks", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args(argv)
    reps = args.reps or (2 if args.quick else 3)
    epochs = args.epochs or (3 if args.quick else 5)
    if epochs < 2:
        parser.error("--epochs must be at least 2 (epoch 1 is warm-up)")

    _common.setup_threads(args.threads)
    env = _common.environment()
    _common.print_header("training throughput: CharacterModel.fit vs a bare PyTorch loop", env)
    n_max = max(CASES[n]["quick_n" if args.quick else "n"] for n in args.networks)
    x_all, y_all = _common.make_images(n_max)
    print(f"# {reps} repetitions x {epochs} epochs per side (epoch 1 = warm-up, excluded); Adam;")
    print("# platform validation split empty (no evaluate); epochs interleaved platform/bare\n")

    started = time.perf_counter()
    results: dict[str, Any] = {}
    for network in args.networks:
        case = CASES[network]
        n = case["quick_n" if args.quick else "n"]
        bs = case["batch_size"]
        runs = [
            run_pair(network, bs, x_all[:n], y_all[:n], epochs, args.threads, seed=rep)
            for rep in range(reps)
        ]
        measured = epochs - 1

        def sps(times: list[float], n: int = n, measured: int = measured) -> float:
            return n * measured / sum(times[1:])

        platform = [sps(r["platform_epoch_wall_s"]) for r in runs]
        platform_loop = [sps(r["platform_epoch_time_s"]) for r in runs]
        bare = [sps(r["bare_epoch_s"]) for r in runs]
        paired = [
            b / p
            for r in runs
            for p, b in zip(r["platform_epoch_wall_s"][1:], r["bare_epoch_s"][1:], strict=True)
        ]
        results[network] = {
            "batch_size": bs,
            "samples_per_epoch": n,
            "steps_per_epoch": -(-n // bs),
            "platform_samples_per_s": _common.median(platform),
            "platform_loop_only_samples_per_s": _common.median(platform_loop),
            "bare_samples_per_s": _common.median(bare),
            "ratio_of_medians": _common.median(platform) / _common.median(bare),
            "ratio_paired_median": _common.median(paired),
            "ratio_paired_min": min(paired),
            "ratio_paired_max": max(paired),
            "runs": runs,
        }

    elapsed = time.perf_counter() - started
    header = (
        f"{'network':8} {'batch':>5} {'n/epoch':>8} {'platform/s':>11} {'(loop only)':>11} "
        f"{'bare/s':>9} {'ratio med':>9} {'paired med':>10} {'paired range':>13}"
    )
    print(header)
    print("-" * len(header))
    for network, r in results.items():
        print(
            f"{network:8} {r['batch_size']:5d} {r['samples_per_epoch']:8d} "
            f"{r['platform_samples_per_s']:11.0f} {r['platform_loop_only_samples_per_s']:11.0f} "
            f"{r['bare_samples_per_s']:9.0f} {r['ratio_of_medians']:9.3f} "
            f"{r['ratio_paired_median']:10.3f} "
            f"{r['ratio_paired_min']:6.3f}-{r['ratio_paired_max']:.3f}"
        )
    print(
        "\nplatform/s: whole epochs between callbacks; (loop only): fit's own epoch_time, which "
        "leaves out the\nbest-weights copy and the epoch line. ratio: platform throughput / bare "
        f"throughput. {elapsed:.0f} s in all.\n"
    )
    env["load_average_at_end"] = _common.load_average()
    path = _common.write_results(
        "bench_training",
        {
            "benchmark": "training_throughput",
            "target": TARGET,
            "quick": args.quick,
            "reps": reps,
            "epochs": epochs,
            "elapsed_s": elapsed,
            "environment": env,
            "results": results,
        },
    )
    print(f"results: {path}")
    for network, r in results.items():
        print(
            _common.ratio_line(
                f"training_throughput[{network}]", "platform/bare", r["ratio_paired_median"], TARGET
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
