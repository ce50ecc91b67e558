"""Line latency at one thread: torch vs onnxruntime on the same model, p50 after warm-up.

Target (issue 15): with ONNX, a line's latency at most torch's (onnx/torch p50 <= 1). Each case is
a shipped experiment config's network and arguments at its image size (training/experiments/*.json),
with untrained weights (latency depends on the architecture and the image size, not on what the
weights learned), saved, exported with ``text_recognizer.export`` and read back by the predictors
with ``runtime="torch"`` and ``runtime="onnx"``. Each timing is one ``predict_arrays`` call on one
prepared image: the forward pass and the decoding (the same code for both runtimes). The two
runtimes alternate call by call, so load on the machine hits both alike.

    python bench/bench_onnx.py [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

CASES = [
    # name, experiment config, model, network, input (H, W), characters, max_length
    (
        "line 28x952 (emnist_lines_lstm_ctc)",
        "emnist_lines_lstm_ctc",
        "LineModelCtc",
        (28, 952),
        79,
        32,
    ),
    ("line 28x952 (iam_lines_lstm_ctc)", "iam_lines_lstm_ctc", "LineModelCtc", (28, 952), 79, 96),
    (
        "line 28x952 (emnist_lines_line_cnn)",
        "emnist_lines_line_cnn",
        "LineModel",
        (28, 952),
        79,
        32,
    ),
    ("line 64x1024 (iam_lines_htr)", "iam_lines_htr", "LineModelCtc", (64, 1024), 79, 96),
    ("line 32x640 (paragraph_lines_htr)", "paragraph_lines_htr", "LineModelCtc", (32, 640), 94, 72),
    ("name 32x256 (kaggle_names_crnn)", "kaggle_names_crnn", "LineModelCtc", (32, 256), 29, 32),
    ("character 28x28 (mnist_lenet)", "mnist_lenet", "CharacterModel", (28, 28), 10, None),
]
EXPERIMENTS = Path(__file__).resolve().parents[1] / "training" / "experiments"


def exported_run(folder: Path, experiment: str, model_name: str, shape, chars: int, max_length):
    """weights.pt of the experiment's network (untrained, seeded) and its model.onnx."""
    import json

    import torch

    from text_recognizer.export import export_onnx
    from text_recognizer.models import MODELS

    config = json.loads((EXPERIMENTS / f"{experiment}.json").read_text())
    data_config = _common.data_config(shape, chars, max_length)
    torch.manual_seed(0)
    args = config.get("network_args") or {}
    model = MODELS[model_name].load()(data_config, config["network"], args, "cpu")
    run = folder / experiment
    model.save_weights(run / "weights.pt", {"network": config["network"], "train_args": {}})
    export_onnx(run, run / "model.onnx")
    return run, config["network"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    _common.setup_threads(args.threads)
    env = _common.environment()
    try:
        import onnx  # noqa: F401  (the export)
        import onnxruntime
    except ImportError:
        print("# skipped: exporting and the onnx runtime need onnx and onnxruntime")
        return 0

    env["onnxruntime"] = onnxruntime.__version__
    _common.print_header("line latency, torch vs onnxruntime, single image", env)
    print(f"# onnxruntime {env['onnxruntime']}, intra-op threads {args.threads}")
    from text_recognizer.predictors import load_predictor

    reps, warmup = (15, 3) if args.quick else (60, 8)
    rng = np.random.default_rng(0)
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        for name, experiment, model_name, shape, chars, max_length in CASES:
            run, network = exported_run(Path(tmp), experiment, model_name, shape, chars, max_length)
            on_torch = load_predictor(run)
            on_onnx = load_predictor(run, runtime="onnx", threads=args.threads)
            x = (rng.random((1, *shape)) * 255).astype(np.uint8)
            same = on_torch.predict_arrays(x)[0].text == on_onnx.predict_arrays(x)[0].text
            times: dict[str, list[float]] = {"torch": [], "onnx": []}
            for i in range(warmup + reps):
                for runtime, predictor in (("torch", on_torch), ("onnx", on_onnx)):
                    start = time.perf_counter()
                    predictor.predict_arrays(x)
                    if i >= warmup:
                        times[runtime].append((time.perf_counter() - start) * 1000)
            p50 = {k: _common.median(v) for k, v in times.items()}
            p90 = {k: float(np.percentile(v, 90)) for k, v in times.items()}
            rows.append((name, network, p50, p90, same))
            results[name] = {
                "network": network,
                "input": list(shape),
                "torch_p50_ms": p50["torch"],
                "onnx_p50_ms": p50["onnx"],
                "torch_p90_ms": p90["torch"],
                "onnx_p90_ms": p90["onnx"],
                "onnx_over_torch": p50["onnx"] / p50["torch"],
                "same_text": same,
                "reps": reps,
            }
    print(f"\n{'case':38s} {'network':14s} {'torch p50':>10s} {'onnx p50':>9s} {'onnx/torch':>10s}")
    for name, network, p50, _, same in rows:
        note = "" if same else "  (texts differ!)"
        ratio = p50["onnx"] / p50["torch"]
        print(
            f"{name:38s} {network:14s} {p50['torch']:10.2f} {p50['onnx']:9.2f} {ratio:10.2f}{note}"
        )
    print()
    for name, _, p50, _, _ in rows:
        ratio = p50["onnx"] / p50["torch"]
        print(_common.ratio_line(f"onnx_latency[{name}]", "onnx/torch p50", ratio, 1.0, "<="))
    _common.write_results("bench_onnx", {"environment": env, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
