"""Cost of on-the-fly augmentation as a fraction of a training step, for the line models.

For each case a batch of real-sized images goes through ``augment_batch`` (geometry only, and with
the ink effects the line models use: thickness, blur, noise) and through one training step of the
line model's network (forward, CTC loss, backward, Adam step), alternately, with the same torch
thread settings. The first round is warm-up; medians of the rest are reported. The ratio is
augmentation time / training-step time (what turning ``train_args.augment`` on adds to an epoch).

Cases, network and image size as in the experiment configs: Kaggle names (crnn,
training/experiments/kaggle_names_crnn.json) and digit lines (line_lstm_ctc,
mnist_lines_lstm_ctc.json: 28 x 28 * max_length), batch 64.

    python bench/bench_augment.py            # ~1 minute on 2 cores
    python bench/bench_augment.py --quick    # ~20 seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import _common

TARGET = 0.10  # augmentation should add at most 10 % to a step
EXPERIMENTS = Path(__file__).resolve().parent.parent / "training" / "experiments"
CASES = {
    "names_crnn": ("kaggle_names_crnn.json", 31),
    "digit_lines_lstm_ctc": ("mnist_lines_lstm_ctc.json", 13),
}


def shapes(config: dict[str, Any], classes: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(input_shape, output_shape) the config's dataset yields."""
    args = config["dataset_args"]
    max_length = args.get("max_length", 32)
    if "image_height" in args:
        return (args["image_height"], args["image_width"]), (max_length, classes)
    return (28, 28 * max_length), (max_length, classes)  # EmnistLinesDataset


def time_case(config_file: str, classes: int, batch_size: int, rounds: int) -> dict[str, Any]:
    import torch

    from text_recognizer.datasets.text import make_mapping
    from text_recognizer.images.augment import augment_batch
    from text_recognizer.models.line_model_ctc import LineModelCtc

    config = json.loads((EXPERIMENTS / config_file).read_text())
    input_shape, (max_length, classes) = shapes(config, classes)
    mapping = make_mapping([chr(ord("A") + i) for i in range(classes - 2)])
    data_config = {
        "input_shape": list(input_shape),
        "output_shape": [max_length, classes],
        "mapping": mapping,
        "max_length": max_length,
    }
    torch.manual_seed(0)
    model = LineModelCtc(data_config, config["network"], config.get("network_args"))
    optimizer = torch.optim.Adam(model.network.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch_size, *input_shape)
    lengths = torch.randint(1, max_length // 2 + 1, (batch_size,))
    y = torch.randint(2, classes, (batch_size, max_length))
    y[torch.arange(max_length)[None] >= lengths[:, None]] = 1
    model.network.train()
    times: dict[str, list[float]] = {"step": [], "augment": [], "augment_ink": []}
    for _ in range(rounds + 1):
        start = time.perf_counter()
        augment_batch(x, 1.0, generator)
        times["augment"].append(time.perf_counter() - start)
        start = time.perf_counter()
        augment_batch(x, 1.0, generator, ink=True)
        times["augment_ink"].append(time.perf_counter() - start)
        start = time.perf_counter()
        loss = model.loss(model.network(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times["step"].append(time.perf_counter() - start)
    med = {k: _common.median(v[1:]) for k, v in times.items()}
    return {
        "batch_size": batch_size,
        "input_shape": list(input_shape),
        "network": config["network"],
        "median_s": med,
        "ratio_geometry": med["augment"] / med["step"],
        "ratio_with_ink": med["augment_ink"] / med["step"],
        "times_s": times,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=None, help="default 8, quick 3 (+ warm-up)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 8)

    _common.setup_threads(args.threads)
    env = _common.environment()
    _common.print_header("augmentation cost as a fraction of a training step", env)
    started = time.perf_counter()
    results = {
        name: time_case(config, classes, args.batch_size, rounds)
        for name, (config, classes) in CASES.items()
    }
    elapsed = time.perf_counter() - started
    print(
        f"{'case':22} {'network':14} {'batch':>5} {'step ms':>8} {'geometry ms':>11} "
        f"{'+ink ms':>8} {'ratio':>6} {'ratio+ink':>9}"
    )
    for name, r in results.items():
        m = r["median_s"]
        print(
            f"{name:22} {r['network']:14} {r['batch_size']:5d} {m['step'] * 1e3:8.1f} "
            f"{m['augment'] * 1e3:11.1f} {m['augment_ink'] * 1e3:8.1f} "
            f"{r['ratio_geometry']:6.3f} {r['ratio_with_ink']:9.3f}"
        )
    print(f"\nmedians of {rounds} rounds after one warm-up round; {elapsed:.0f} s in all.\n")
    env["load_average_at_end"] = _common.load_average()
    path = _common.write_results(
        "bench_augment",
        {"benchmark": "augment_cost", "target": TARGET, "environment": env, "results": results},
    )
    print(f"results: {path}")
    for name, r in results.items():
        verdict = "" if r["ratio_with_ink"] <= TARGET else "  MISSED"
        print(
            f"ratio augment_cost[{name}] augment/step = {r['ratio_with_ink']:.3f} "
            f"(target <= {TARGET:g}; geometry only {r['ratio_geometry']:.3f}){verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
