"""CTC decoding throughput: greedy (vectorised torch) versus beam search (flashlight-text), plain and
with a character 6-gram LM (KenLM; with and without an insertion bonus), plus the text metrics that
follow decoding at evaluation.

Posteriors are made to look like a trained CTC network's: for each sample a random label sequence
is laid along T frames (about half the frames blank, a character held for 1-3 frames), and each
frame's distribution puts a random 0.55-0.99 on its class and the rest mostly on a few others
(Dirichlet, alpha 0.1), as a softmax does.
Two shapes: names (crnn on 64x256 images: T=64, 30 classes) and digit lines (line_lstm_ctc on
28x448: T=53, 13 classes). The LM is estimated (ngram.py) from random words of the classes' letters:
its content does not matter for the timing.

Trials are interleaved (greedy, beam 1, beam 5, ..., greedy, ...); the first is warm-up; the median
of the rest is reported, in sequences per second (one thread, as at evaluation on a shared CPU).

    python bench/bench_decoding.py            # ~30 seconds on 2 cores
    python bench/bench_decoding.py --quick    # ~10 seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common
import numpy as np

WIDTHS = (1, 5, 10, 25)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ -'"
SHAPES = {"names": (64, 30), "digit_lines": (53, 13)}


def posteriors(n: int, steps: int, classes: int, seed: int = 0) -> np.ndarray:
    """(n, T, C) float32 probabilities shaped like a trained CTC network's outputs."""
    rng = np.random.default_rng(seed)
    path = np.zeros((n, steps), dtype=np.int64)
    for i in range(n):
        t = 0
        while t < steps:
            hold = int(rng.integers(1, 4))
            path[i, t : t + hold] = 0 if rng.random() < 0.5 else rng.integers(2, classes)
            t += hold
    peak = rng.uniform(0.55, 0.99, size=(n, steps, 1))
    probs = (1 - peak) * rng.dirichlet(np.full(classes, 0.1), size=(n, steps))  # the rest
    np.put_along_axis(probs, path[..., None], peak, axis=2)  # the peak on the path
    probs /= probs.sum(-1, keepdims=True)
    return probs.astype(np.float32)


def decoders(classes: int) -> dict[str, Callable[[Any, Any], list]]:
    from text_recognizer import decoding

    out: dict[str, Callable[[Any, Any], list]] = {
        "greedy": lambda probs, log_probs: decoding.greedy_ctc_decode(log_probs),
    }
    for width in WIDTHS:
        out[f"beam{width}"] = lambda probs, log_probs, w=width: decoding.beam_ctc_decode(probs, w)
    import tempfile

    from text_recognizer import ngram
    from text_recognizer.datasets.text import make_mapping

    mapping = make_mapping(LETTERS[: classes - 2])
    rng = np.random.default_rng(1)  # text for the LM: random words of the mapping's characters
    letters = mapping[2:]
    lines = [
        " ".join("".join(rng.choice(letters, int(rng.integers(2, 8)))) for _ in range(5))
        for _ in range(2000)
    ]
    arpa = Path(tempfile.mkdtemp(prefix="bench-lm-")) / "lm.arpa"
    ngram.write_arpa(ngram.estimate(lines, 6), arpa)
    for name, weight, bonus in (("lm10", 1.0, 0.0), ("lm10bonus", 1.0, 1.0)):
        decoder = decoding.Decoder("beam", 10, str(arpa), weight, bonus)
        out[name] = lambda probs, log_probs, d=decoder: d.decode(log_probs, mapping, 0, (1,))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=None, help="sequences per trial (default 512)")
    parser.add_argument("--trials", type=int, default=None, help="default 4, quick 2 (+ warm-up)")
    args = parser.parse_args(argv)
    n = args.n or (256 if args.quick else 512)
    trials = (args.trials or (2 if args.quick else 4)) + 1

    _common.setup_threads(1)
    import torch

    from text_recognizer import decoding, metrics
    from text_recognizer.datasets.text import make_mapping

    env = _common.environment()
    _common.print_header("CTC decoding throughput: greedy vs beam search", env)
    started = time.perf_counter()
    results: dict[str, Any] = {}
    for shape_name, (steps, classes) in SHAPES.items():
        probs = posteriors(n, steps, classes)
        probs_t = torch.from_numpy(probs)
        log_probs = probs_t.clamp_min(1e-12).log()
        runs = decoders(classes)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(trials):
            for name, run in runs.items():
                start = time.perf_counter()
                run(probs_t, log_probs)
                times[name].append(time.perf_counter() - start)
        rate = {name: n / _common.median(t[1:]) for name, t in times.items()}
        mapping = make_mapping(LETTERS[: classes - 2])
        predicted = decoding.to_texts(decoding.greedy_ctc_decode(log_probs), mapping)
        start = time.perf_counter()
        metrics.text_metrics(predicted, predicted[::-1])
        rate["metrics"] = n / (time.perf_counter() - start)
        greedy_texts = decoding.greedy_ctc_decode(log_probs)
        agree = np.mean(
            [
                a == b
                for a, b in zip(greedy_texts, decoding.beam_ctc_decode(probs_t, 10), strict=True)
            ]
        )
        results[shape_name] = {
            "steps": steps,
            "classes": classes,
            "sequences": n,
            "per_second": rate,
            "beam10_equals_greedy": float(agree),
        }
    elapsed = time.perf_counter() - started

    names = list(next(iter(results.values()))["per_second"])
    print(f"{'shape':12} {'T':>3} {'C':>3} " + " ".join(f"{k:>12}" for k in names))
    for shape_name, r in results.items():
        cells = " ".join(f"{r['per_second'][k]:12,.0f}" for k in names)
        print(f"{shape_name:12} {r['steps']:3d} {r['classes']:3d} {cells}")
    print(
        "\nsequences per second, one thread; metrics = CER/WER/char/word accuracy on decoded "
        "texts. Beam 10 returned the greedy labels for "
        + ", ".join(f"{k} {v['beam10_equals_greedy']:.0%}" for k, v in results.items())
        + f". {elapsed:.0f} s in all.\n"
    )
    env["load_average_at_end"] = _common.load_average()
    path = _common.write_results(
        "bench_decoding", {"benchmark": "ctc_decoding", "environment": env, "results": results}
    )
    print(f"results: {path}")
    for shape_name, r in results.items():
        per = r["per_second"]
        for width in (5, 10):
            print(
                f"ratio decoding[{shape_name}] greedy/beam{width} = "
                f"{per['greedy'] / per[f'beam{width}']:.1f} (beam{width}: {per[f'beam{width}']:,.0f} "
                f"sequences/s, greedy: {per['greedy']:,.0f})"
            )
        print(
            f"ratio decoding[{shape_name}] beam10/beam10+LM = {per['beam10'] / per['lm10']:.1f} "
            f"(LM: {per['lm10']:,.0f} sequences/s; with a bonus {per['lm10bonus']:,.0f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
