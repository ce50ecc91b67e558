#!/usr/bin/env python
"""CPU training throughput of the line networks at the same input size: htr_crnn next to crnn.

Both train through ``LineModelCtc.fit`` (the platform's loop, defaults of the registry for each
network) on the same uint8 line images (random strokes: throughput does not depend on what the
lines say), the same labels, batch size and seed, with no validation split. The two networks take
turns fit by fit, the order alternating per repetition; epoch 1 of every fit is warm-up. Reported:
median samples/s per network and the ratio htr_crnn / crnn per input size (a figure, no target:
the best-practices network is bigger, and this says by how much it costs on a CPU).

    python bench/bench_line_networks.py            # ~2-3 min on 2 cores
    python bench/bench_line_networks.py --quick    # ~40 s
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

NETWORKS = ("crnn", "htr_crnn")
SIZES = {"28x256": (28, 256), "64x512": (64, 512)}


def lines(height: int, width: int, n: int, max_length: int, seed: int = 0) -> SimpleNamespace:
    """``n`` line images of random strokes and random labels of 1..max_length characters."""
    from text_recognizer.datasets.text import encode_many, make_mapping

    rng = np.random.default_rng(seed)
    x = (rng.random((n, height, width)) > 0.9).astype(np.uint8) * 255
    chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    texts = ["".join(rng.choice(list(chars), rng.integers(1, max_length + 1))) for _ in range(n)]
    mapping = make_mapping(chars)
    y = encode_many(texts, mapping, max_length)
    empty = x[:0], y[:0]
    return SimpleNamespace(x_train=x, y_train=y, x_val=empty[0], y_val=empty[1], mapping=mapping)


def epoch_rates(network: str, data: SimpleNamespace, epochs: int, batch: int, seed: int) -> dict:
    """One fit: samples/s of every epoch after the first, and the network's parameter count."""
    import torch

    from text_recognizer.config import TrainArgs
    from text_recognizer.datasets.text import text_config
    from text_recognizer.models.line_model_ctc import LineModelCtc
    from text_recognizer.networks import NETWORKS as REGISTRY

    height, width = data.x_train.shape[1:]
    max_length = data.y_train.shape[1]
    config = {
        "kind": "lines",
        "input_shape": [height, width],
        "mapping": data.mapping,
        **text_config(data.mapping, max_length),
    }
    args = {k: p.default for k, p in REGISTRY[network].args.items()}
    torch.manual_seed(seed)
    model = LineModelCtc(config, network, args)
    rates: list[float] = []
    mark = [time.perf_counter()]

    def on_epoch_end(metrics: dict[str, Any]) -> None:
        rates.append(len(data.x_train) / (time.perf_counter() - mark[0]))
        mark[0] = time.perf_counter()

    train_args = TrainArgs.from_config({"batch_size": batch, "epochs": epochs, "seed": seed})
    with contextlib.redirect_stderr(io.StringIO()):
        model.fit(data, train_args, on_epoch_end=on_epoch_end)
    return {"rates": rates[1:], "params": sum(p.numel() for p in model.network.parameters())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and epochs (~40 s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--reps", type=int, default=2, help="repetitions (default 2)")
    args = parser.parse_args(argv)
    _common.setup_threads(args.threads)
    env = _common.environment()
    _common.print_header("line networks: htr_crnn vs crnn, LineModelCtc.fit samples/s", env)
    n, epochs, batch = (64, 2, 16) if args.quick else (192, 3, 16)
    results: dict[str, Any] = {}
    for size, (height, width) in SIZES.items():
        data = lines(height, width, n, max_length=width // 16)
        runs: dict[str, list[float]] = {name: [] for name in NETWORKS}
        params: dict[str, int] = {}
        for rep in range(args.reps):
            order = NETWORKS if rep % 2 == 0 else NETWORKS[::-1]
            for name in order:
                fit = epoch_rates(name, data, epochs, batch, seed=rep)
                runs[name] += fit["rates"]
                params[name] = fit["params"]
        rates = {name: _common.median(r) for name, r in runs.items()}
        results[size] = {"samples_per_s": rates, "params": params, "samples": n, "batch": batch}
        print(
            f"{size:7}  "
            + "  ".join(f"{m} {rates[m]:7.1f}/s ({params[m] / 1e6:.2f} M params)" for m in NETWORKS)
            + f"  htr_crnn/crnn {rates['htr_crnn'] / rates['crnn']:.2f}"
        )
    env["load_average_at_end"] = _common.load_average()
    path = _common.write_results("bench_line_networks", {"environment": env, "results": results})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
