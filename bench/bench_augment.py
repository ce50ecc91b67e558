"""Cost of on-the-fly augmentation as a fraction of a training step, for the line models.

For each case a batch of real-sized images goes through ``augment_batch`` (geometry only, and with
the ink effects the line models use: thickness, blur, ink/paper levels, noise) and through one
training step of the line model's network, alternately, with the same torch thread settings. The
step is the platform's own ``train_step`` (models/training.py: forward, CTC loss, backward, the
finite checks, Adam step) with the optimizer ``fit`` builds from the default ``train_args``; the
network is built by ``LineModelCtc`` with the registry's defaults, and freed memory stays in the
heap as ``run_experiment`` keeps it on a CPU (run/heap.py). Each round times the augmentation
three times (their median) and the step once; the first round is warm-up, medians of the rest are
reported. The ratio is augmentation time / step time (what ``train_args.augment`` adds to a step).

Cases: Kaggle names (crnn, training/experiments/kaggle_names_crnn.json) and digit lines
(line_lstm_ctc, mnist_lines_lstm_ctc.json: 28 x 28 * max_length), batch 64; the line networks
``crnn`` and ``htr_crnn`` at 64 x 512 and 128 x 1024, batch 32 (``--quick``: 64 x 512 only, batch 8).

    python bench/bench_augment.py            # ~5 minutes on 2 cores (the 128 x 1024 steps: 20-40 s)
    python bench/bench_augment.py --quick    # ~40 seconds
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import _common

TARGET = 0.15  # augmentation should add at most 15 % to a step
EXPERIMENTS = Path(__file__).resolve().parent.parent / "training" / "experiments"
CONFIG_CASES = {
    "names_crnn": ("kaggle_names_crnn.json", 31),
    "digit_lines_lstm_ctc": ("mnist_lines_lstm_ctc.json", 13),
}
LINE_NETWORKS = ("crnn", "htr_crnn")
LINE_SIZES = {"64x512": (64, 512), "128x1024": (128, 1024)}
CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def config_case(config_file: str, classes: int) -> tuple[dict[str, Any], str, dict | None]:
    """(data_config, network, network_args) of an experiment config."""
    from text_recognizer.datasets.text import make_mapping

    config = json.loads((EXPERIMENTS / config_file).read_text())
    args = config["dataset_args"]
    max_length = args.get("max_length", 32)
    if "image_height" in args:
        input_shape = (args["image_height"], args["image_width"])
    else:  # EmnistLinesDataset
        input_shape = (28, 28 * max_length)
    mapping = make_mapping([chr(ord("A") + i) for i in range(classes - 2)])
    data_config = {
        "input_shape": list(input_shape),
        "output_shape": [max_length, classes],
        "mapping": mapping,
        "max_length": max_length,
    }
    return data_config, config["network"], config.get("network_args")


def line_case(network: str, height: int, width: int) -> tuple[dict[str, Any], str, dict]:
    """(data_config, network, the registry's default network_args) for a line of that size."""
    from text_recognizer.datasets.text import make_mapping, text_config
    from text_recognizer.networks import NETWORKS as REGISTRY

    mapping = make_mapping(CHARS)
    config = {"kind": "lines", "input_shape": [height, width], "mapping": mapping}
    config.update(text_config(mapping, width // 16))
    return config, network, {k: p.default for k, p in REGISTRY[network].args.items()}


def time_case(
    data_config: dict[str, Any], network: str, network_args: dict | None, batch: int, rounds: int
) -> dict[str, Any]:
    import torch

    from text_recognizer.config import TrainArgs
    from text_recognizer.images.augment import augment_batch
    from text_recognizer.models.line_model_ctc import LineModelCtc
    from text_recognizer.models.precision import Precision
    from text_recognizer.models.training import Optimization, train_step

    input_shape = tuple(data_config["input_shape"])
    max_length, classes = data_config["output_shape"]
    torch.manual_seed(0)
    model = LineModelCtc(data_config, network, network_args)
    args = TrainArgs.from_config({"batch_size": batch, "epochs": 1, "seed": 0})
    precision = Precision.choose(args.mixed_precision, model.device)
    parts = Optimization.build(model.network, args, 1, precision)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(batch, *input_shape)
    lengths = torch.randint(1, max_length // 2 + 1, (batch,))
    y = torch.randint(2, classes, (batch, max_length))
    y[torch.arange(max_length)[None] >= lengths[:, None]] = 1
    model.network.train()

    def timed(fn: Any, repeat: int = 1) -> float:
        spans = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            spans.append(time.perf_counter() - start)
        return _common.median(spans)

    times: dict[str, list[float]] = {"step": [], "augment": [], "augment_ink": []}
    for _ in range(rounds + 1):
        times["augment"].append(timed(lambda: augment_batch(x, 1.0, generator), 3))
        times["augment_ink"].append(timed(lambda: augment_batch(x, 1.0, generator, ink=True), 3))
        times["step"].append(
            timed(lambda: train_step(model, model.network, x, y, parts, args, precision))
        )
    med = {k: _common.median(v[1:]) for k, v in times.items()}
    return {
        "batch_size": batch,
        "input_shape": list(input_shape),
        "network": network,
        "median_s": med,
        "ratio_geometry": med["augment"] / med["step"],
        "ratio_with_ink": med["augment_ink"] / med["step"],
        "times_s": times,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="every case (default 64/32)")
    parser.add_argument("--rounds", type=int, default=None, help="default 3, quick 2 (+ warm-up)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 3)

    from text_recognizer.run.heap import keep_freed_memory

    keep_freed_memory()  # as run_experiment does on a CPU
    _common.setup_threads(args.threads)
    env = _common.environment()
    _common.print_header("augmentation cost as a fraction of a training step", env)
    cases: dict[str, tuple[Any, ...]] = {
        name: (*config_case(*spec), args.batch_size or 64) for name, spec in CONFIG_CASES.items()
    }
    sizes = {"64x512": LINE_SIZES["64x512"]} if args.quick else LINE_SIZES
    for size, (height, width) in sizes.items():
        for network in LINE_NETWORKS:
            batch = args.batch_size or (8 if args.quick else 32)
            cases[f"{network}_{size}"] = (*line_case(network, height, width), batch)
    started = time.perf_counter()
    print(
        f"{'case':22} {'network':14} {'batch':>5} {'step ms':>9} {'geometry ms':>11} "
        f"{'+ink ms':>8} {'ratio':>6} {'ratio+ink':>9}"
    )
    results = {}
    for name, case in cases.items():
        r = results[name] = time_case(*case, rounds)
        m = r["median_s"]
        print(
            f"{name:22} {r['network']:14} {r['batch_size']:5d} {m['step'] * 1e3:9.1f} "
            f"{m['augment'] * 1e3:11.1f} {m['augment_ink'] * 1e3:8.1f} "
            f"{r['ratio_geometry']:6.3f} {r['ratio_with_ink']:9.3f}",
            flush=True,
        )
    elapsed = time.perf_counter() - started
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
