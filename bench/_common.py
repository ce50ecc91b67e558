"""Shared helpers for the benchmarks: thread setup, the environment header, data and JSON results.

Benchmarks print ratios measured in one run (both sides interleaved under the same conditions);
they report and always exit 0. Tests assert, benchmarks do not.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
NUM_CLASSES = 36  # digits + upper case, like SyntheticCharactersDataset's default charset
IMAGE_SIZE = 28


def data_config(
    shape: tuple[int, int], chars: int, max_length: int | None = None
) -> dict[str, Any]:
    """What a dataset would tell a model of ``chars`` classes at ``shape``: characters when
    ``max_length`` is None, else lines of up to ``max_length`` (the benchmarks' untrained
    models: latency depends on the architecture and the image size, not on the data)."""
    from text_recognizer.datasets.text import make_mapping, text_config

    letters = [chr(c) for c in range(33, 33 + chars)]
    if max_length is None:
        return {
            "kind": "characters",
            "input_shape": list(shape),
            "output_shape": [chars],
            "mapping": letters,
        }
    mapping = make_mapping(letters)
    return {
        "kind": "lines",
        "input_shape": list(shape),
        "mapping": mapping,
        **text_config(mapping, max_length),
    }


def setup_threads(threads: int) -> None:
    """Pin torch's intra-op and inter-op thread pools to the same size, before any torch work."""
    import torch

    torch.set_num_threads(threads)
    # RuntimeError: already set (or parallel work already ran): keep what is there
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(threads)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def environment() -> dict[str, Any]:
    import torch

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "intra_op_threads": torch.get_num_threads(),
        "inter_op_threads": torch.get_num_interop_threads(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load_average(),
    }


def print_header(title: str, env: dict[str, Any]) -> None:
    print(f"# {title}")
    print(f"# date {env['date']}  python {env['python']}  torch {env['torch']}")
    print(
        f"# cpu {env['cpu']} ({env['cpu_count']} cores)  torch threads: "
        f"intra-op {env['intra_op_threads']}, inter-op {env['inter_op_threads']}"
    )
    load = env["load_average_at_start"]
    if load is not None:
        busy = load[0] > 0.5 * (env["cpu_count"] or 1)
        note = "  (the machine is busy: figures are noisy; ratios are paired to compensate)"
        print(f"# load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}" + (note if busy else ""))
    print(f"# command: {env['command']}")
    sys.stdout.flush()


def make_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` realistic 28x28 uint8 character images (white ink on black) and int64 labels.

    Made in memory by the platform's synthetic generator (no cache file is written); at most 4096
    distinct images are generated and tiled, which is enough for throughput measurements.
    """
    distinct = min(n, 4096)
    try:
        from text_recognizer.datasets.synthetic_characters import (
            CHARSETS,
            generate,
            render_templates,
        )
    except ImportError:  # the generator moved: random images (only HDF5 sizes differ much)
        rng = np.random.default_rng(seed)
        x = rng.integers(0, 256, (n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
        return x, rng.integers(0, NUM_CLASSES, n).astype(np.int64)
    templates, template_class = render_templates(CHARSETS["digits_upper"])
    x, y = generate(
        templates,
        template_class,
        NUM_CLASSES,
        distinct,
        IMAGE_SIZE,
        1.0,
        np.random.default_rng(seed),
    )
    reps = -(-n // distinct)
    return np.ascontiguousarray(np.tile(x, (reps, 1, 1))[:n]), np.tile(y, reps)[:n]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ratio_line(name: str, what: str, value: float, target: float, kind: str = ">=") -> str:
    if kind not in (">=", "<="):
        raise ValueError(f"kind must be '>=' or '<=', got {kind!r}")
    ok = value >= target if kind == ">=" else value <= target
    verdict = "" if ok else "  MISSED"
    return f"ratio {name} {what} = {value:.2f} (target {kind} {target:g}){verdict}"


def write_results(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def index_select_batches(self, x, y, batch_size, shuffle=False, generator=None):
    """Model.batches with ``index_select`` instead of advanced indexing for the shuffled gather."""
    import torch

    n = len(x)
    if shuffle:
        order = torch.randperm(n, generator=generator).to(x.device)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            yield self.preprocess(x.index_select(0, idx)), y.index_select(0, idx)
    else:
        for i in range(0, n, batch_size):
            yield self.preprocess(x[i : i + batch_size]), y[i : i + batch_size]
