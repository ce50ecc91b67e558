"""Data path: the platform's batched gather versus per-sample torch Dataset + DataLoader pipelines.

- platform: ``Model.batches(x, y, batch_size, shuffle=True)`` on the split held as one uint8 tensor:
  one shuffled gather and one uint8 -> float cast per batch.
- per-sample pipelines of the common kind: a ``torch.utils.data.Dataset`` whose ``__getitem__``
  reads one row and applies a per-image transform (uint8 HxW -> float 1xHxW / 255, what
  torchvision's ``ToTensor`` does; torchvision itself is not needed), fed through
  ``DataLoader(batch_size, sampler=RandomSampler)`` (shuffled) with its default collate, with
  ``num_workers=0`` and, where worker processes can start here, ``num_workers=2``
  (``persistent_workers=True``, so worker start-up is not counted after the warm-up epoch). Rows
  come from (1) an in-memory uint8 numpy array, (2) an HDF5 file with one lzf chunk per image,
  the layout a per-sample reader would choose, and (3) the platform's own HDF5 cache, written
  here into a temporary folder by ``Dataset._write_cache`` exactly as in data/processed/. Its
  automatic chunks span thousands of images and a few pixels each, so one row costs milliseconds;
  that pipeline reads ``--cache-batches`` random batches per trial instead of whole epochs. HDF5
  files open lazily, once per worker.
- an informational row runs ``Model.batches`` with ``index_select`` in place of advanced indexing
  (the suggested change; see bench/README.md).

Every pipeline consumes each batch with ``xb.sum()``. Trials (one epoch each) are interleaved
across pipelines (platform, numpy, hdf5, ..., platform, ...); the first trial of each is warm-up,
and the median batches/s is reported. The headline ratio is the platform over the fastest
per-sample pipeline; one ratio line per pipeline follows.

    python bench/bench_data.py            # ~30 s on 2 cores
    python bench/bench_data.py --quick    # ~5-10 s
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import _common
import numpy as np

TARGET = 5.0
SUGGESTED = "(suggested: index_select gather)"


def image_to_tensor(img: np.ndarray):
    """Per-image transform like torchvision's ToTensor: uint8 HxW -> float32 1xHxW in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(img)).unsqueeze(0).float().div(255)


def make_datasets():
    """The two torch Dataset classes (defined lazily so importing this module stays light)."""
    import torch

    class ArraySamples(torch.utils.data.Dataset):
        """One row of an in-memory uint8 array per item."""

        def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
            self.x, self.y = x, y

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int):
            return image_to_tensor(self.x[i]), int(self.y[i])

    class Hdf5Samples(torch.utils.data.Dataset):
        """One row of the platform's HDF5 cache per item; the file opens lazily in each worker."""

        def __init__(self, path: Path, x_key: str = "x_trainval", y_key: str = "y_trainval"):
            import h5py

            self.path, self.x_key, self.y_key = path, x_key, y_key
            self.file = None
            with h5py.File(path, "r") as f:
                self.n = len(f[y_key])

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, i: int):
            if self.file is None:
                import h5py

                self.file = h5py.File(self.path, "r")
                self.x, self.y = self.file[self.x_key], self.file[self.y_key]
            return image_to_tensor(self.x[i]), int(self.y[i])

        def __getstate__(self) -> dict[str, Any]:  # never pickle an open h5py handle
            return {**self.__dict__, "file": None, "x": None, "y": None}

    return ArraySamples, Hdf5Samples


def write_platform_cache(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """Write ``x, y`` as the platform writes its processed cache (same layout and compression)."""
    from text_recognizer.datasets.synthetic_characters import SyntheticCharactersDataset

    arrays = {"x_trainval": x, "y_trainval": y, "x_test": x[:1], "y_test": y[:1]}
    SyntheticCharactersDataset()._write_cache(path, arrays, [str(i) for i in range(36)])


def write_row_chunked(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """The same arrays in an HDF5 file laid out for per-row reads: one lzf chunk per image."""
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("x_trainval", data=x, compression="lzf", chunks=(1, *x.shape[1:]))
        f.create_dataset("y_trainval", data=y)


def hdf5_chunks(path: Path) -> tuple[int, ...] | None:
    import h5py

    with h5py.File(path, "r") as f:
        return f["x_trainval"].chunks


def consume(batches: Iterable) -> int:
    count = 0
    for xb, _ in batches:
        xb.sum()
        count += 1
    return count


def workers_available() -> str | None:
    """None when DataLoader worker processes can start here, else the reason they cannot."""
    import torch

    try:
        loader = torch.utils.data.DataLoader(list(range(4)), batch_size=2, num_workers=2)
        list(loader)
        return None
    except Exception as e:  # sandboxes without shared memory or fork
        return f"{type(e).__name__}: {e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller, faster run (~5-10 s)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra- and inter-op threads (default 1)"
    )
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=None, help="default 20480, quick 4096")
    parser.add_argument(
        "--reps", type=int, default=None, help="epochs per pipeline (default 7, quick 3)"
    )
    parser.add_argument(
        "--cache-batches",
        type=int,
        default=None,
        help="batches per trial read row by row from the platform's HDF5 cache (default 2)",
    )
    parser.add_argument("--no-workers", action="store_true", help="skip num_workers=2")
    parser.add_argument(
        "--no-suggested", action="store_true", help="skip the index_select variant of Model.batches"
    )
    args = parser.parse_args(argv)
    n = args.samples or (4096 if args.quick else 20480)
    reps = args.reps or (3 if args.quick else 7)
    cache_batches = args.cache_batches or (1 if args.quick else 2)
    cache_reps = min(reps, 3)
    bs = args.batch_size

    _common.setup_threads(args.threads)
    import torch

    from text_recognizer.models.character_model import CharacterModel

    env = _common.environment()
    _common.print_header("data path: Model.batches vs per-sample Dataset + DataLoader", env)
    x, y = _common.make_images(n)
    steps = math.ceil(n / bs)
    data_config = {"input_shape": [28, 28], "output_shape": [36], "mapping": list(range(36))}
    model = CharacterModel(data_config, "mlp", {}, "cpu")
    x_t, y_t = model.to_tensor(x), model.to_tensor(y)
    ArraySamples, Hdf5Samples = make_datasets()
    no_workers = "--no-workers" if args.no_workers else workers_available()
    worker_counts = [0] if no_workers else [0, 2]

    tmp = tempfile.TemporaryDirectory(prefix="bench_data_")
    cache_path = Path(tmp.name) / "synthetic_characters_bench.h5"
    write_platform_cache(cache_path, x, y)
    rows_path = Path(tmp.name) / "row_chunked.h5"
    write_row_chunked(rows_path, x, y)
    chunks = hdf5_chunks(cache_path)
    print(f"# {n} samples of 28x28 uint8, batch {bs} ({steps} batches per epoch)")
    print(f"# {reps} epochs per pipeline, interleaved; the first of each is warm-up")
    print(
        f"# platform HDF5 cache: {cache_path.stat().st_size / 1e6:.1f} MB, lzf, chunks {chunks}: "
        f"a row touches many chunks,\n#   so that pipeline reads {cache_batches} random "
        f"batch(es) per trial, {cache_reps} trials; the row-chunked copy reads full epochs"
    )
    if no_workers:
        print(f"# num_workers=2 skipped: {no_workers}")
    print()

    generator = torch.Generator().manual_seed(0)
    # name -> (make an iterable of batches, batches it yields, trials)
    pipelines: dict[str, tuple[Callable[[], Iterable], int, int]] = {
        "platform Model.batches": (
            lambda: model.batches(x_t, y_t, bs, shuffle=True, generator=generator),
            steps,
            reps,
        )
    }
    if not args.no_suggested:
        pipelines[SUGGESTED] = (
            lambda: _common.index_select_batches(
                model, x_t, y_t, bs, shuffle=True, generator=generator
            ),
            steps,
            reps,
        )
    sources = (
        ("numpy", lambda: ArraySamples(x, y), steps, reps),
        ("hdf5 row-chunked", lambda: Hdf5Samples(rows_path), steps, reps),
        ("hdf5 platform cache", lambda: Hdf5Samples(cache_path), cache_batches, cache_reps),
    )
    keep_alive = []
    for source, make_ds, batches, trials in sources:
        for workers in worker_counts:
            ds = make_ds()  # one per loader: workers never inherit an open HDF5 handle
            sampler = torch.utils.data.RandomSampler(
                ds, num_samples=min(len(ds), batches * bs), generator=torch.Generator()
            )
            loader = torch.utils.data.DataLoader(
                ds,
                batch_size=bs,
                sampler=sampler,
                num_workers=workers,
                persistent_workers=workers > 0,
            )
            keep_alive.append(loader)
            pipelines[f"DataLoader {source} w={workers}"] = (lambda ld=loader: ld, batches, trials)

    times: dict[str, list[float]] = {k: [] for k in pipelines}
    started = time.perf_counter()
    for rep in range(reps):
        for name, (make, batches, trials) in pipelines.items():
            if rep >= trials:
                continue
            t0 = time.perf_counter()
            count = consume(make())
            times[name].append(time.perf_counter() - t0)
            assert count == batches, (name, count, batches)
    elapsed = time.perf_counter() - started
    del keep_alive, pipelines
    tmp.cleanup()

    counts = {k: steps for k in times}
    counts.update({k: cache_batches for k in times if "platform cache" in k})
    rates = {k: counts[k] / _common.median(v[1:] if len(v) > 1 else v) for k, v in times.items()}
    platform_rate = rates["platform Model.batches"]
    print(f"{'pipeline':38} {'batches/s':>10} {'samples/s':>10} {'ms/batch':>9} {'platform x':>10}")
    print("-" * 81)
    for name, rate in rates.items():
        print(
            f"{name:38} {rate:10.1f} {rate * bs:10.0f} {1e3 / rate:9.2f} "
            f"{platform_rate / rate:10.1f}"
        )
    per_sample = {k: v for k, v in rates.items() if k.startswith("DataLoader")}
    fastest = max(per_sample, key=per_sample.get)
    ratio = platform_rate / per_sample[fastest]
    print(
        f"\nplatform x: how many times more batches/s the platform's Model.batches delivers."
        f"\nfastest per-sample pipeline: {fastest}. {elapsed:.0f} s in all.\n"
    )

    env["load_average_at_end"] = _common.load_average()
    path = _common.write_results(
        "bench_data",
        {
            "benchmark": "data_path",
            "target": TARGET,
            "quick": args.quick,
            "samples": n,
            "batch_size": bs,
            "reps": reps,
            "platform_cache_chunks": chunks,
            "platform_cache_batches_per_trial": cache_batches,
            "workers_skipped": no_workers,
            "elapsed_s": elapsed,
            "environment": env,
            "batches_per_s": rates,
            "trial_times_s": times,
            "ratio_vs_fastest_per_sample": ratio,
            "fastest_per_sample": fastest,
        },
    )
    print(f"results: {path}")
    print(_common.ratio_line("data_batches_per_s", "platform/fastest_per_sample", ratio, TARGET))
    for name, rate in per_sample.items():
        label = name.replace("DataLoader ", "").replace(" ", "_")
        print(
            _common.ratio_line(
                "data_batches_per_s", f"platform/{label}", platform_rate / rate, TARGET
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
