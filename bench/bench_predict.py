"""Predict latency on this CPU: one image at a time, one thread, median after warm-up.

Targets (issue 6): a character under 5 ms; a 28x952 or 64x256 line under 30 ms. The models are
built with their networks' default arguments and untrained weights: latency depends on the
architecture and image size, not on what the weights learned. Each timing covers the whole
predictor call on a uint8 array of the raw image size (preprocessing, forward, decoding).

    python bench/bench_predict.py [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

CASES = [
    # name, model, network, input (H, W), mapping size without specials, max_length, target ms
    ("character lenet 28x28", "CharacterModel", "lenet", (28, 28), 62, None, 5.0),
    ("line line_lstm_ctc 28x952", "LineModelCtc", "line_lstm_ctc", (28, 952), 79, 34, 30.0),
    ("name crnn 64x256", "LineModelCtc", "crnn", (64, 256), 29, 32, 30.0),
]


def build_predictor(model_name: str, network: str, shape: tuple[int, int], chars: int, max_length):
    from text_recognizer.models import MODELS
    from text_recognizer.networks import NETWORKS
    from text_recognizer.predictors import CharacterPredictor, LinePredictor

    data_config = _common.data_config(shape, chars, max_length)
    args = {k: p.default for k, p in NETWORKS[network].args.items()}
    model = MODELS[model_name].load()(data_config, network, args, "cpu")
    model.network.eval()
    return (CharacterPredictor if max_length is None else LinePredictor)(model)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    _common.setup_threads(args.threads)
    env = _common.environment()
    _common.print_header("predict latency, single image", env)
    reps, warmup = (20, 5) if args.quick else (100, 10)
    rng = np.random.default_rng(0)
    rows, results = [], {}
    for name, model_name, network, shape, chars, max_length, target in CASES:
        predictor = build_predictor(model_name, network, shape, chars, max_length)
        image = (rng.random(shape) * 255).astype(np.uint8)
        for _ in range(warmup):
            predictor.predict(image)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            predictor.predict(image)
            times.append((time.perf_counter() - start) * 1000)
        med, p90 = _common.median(times), float(np.percentile(times, 90))
        rows.append((name, med, p90, target))
        results[name] = {"median_ms": med, "p90_ms": p90, "target_ms": target, "reps": reps}
    print(f"\n{'case':32s} {'median ms':>10s} {'p90 ms':>8s} {'target':>8s}")
    for name, med, p90, target in rows:
        print(f"{name:32s} {med:10.2f} {p90:8.2f} {target:8.1f}")
    print()
    for name, med, _, target in rows:
        # headroom: how many times under the target the median is (>= 1 meets it)
        print(_common.ratio_line(f"predict_latency[{name}]", "target/median", target / med, 1.0))
    _common.write_results("bench_predict", {"environment": env, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
