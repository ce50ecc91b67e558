"""Building ImageTextDataset's cache on all cores against decoding one image at a time.

N small grey PNG lines (about 32 x 150-250 pixels, text drawn by PIL) and a CSV of their
transcripts are written once into a temporary folder. Each build then runs in a fresh process
(``python bench/bench_image_text_cache.py --child ...``): ``ImageTextDataset(workers=W)``'s
``_build_cache``, what the first ``load_or_generate_data`` does (list and pair the files, decode
and preprocess every image to 32 x 256, split, write the HDF5 cache), with ``workers=1`` (one by one
in that process) and ``workers=0`` (all cores: chunks of images decoded in a forkserver pool,
written straight into the preallocated array). Figures per build:

- images/s: N / the build's wall time (the whole build: listing, decoding, writing the cache);
- decode images/s: N / the time of the decoding alone (``ImageTextDataset._decode``);
- memory: the build process's peak RSS (VmHWM) minus its RSS before the build minus the
  bytes of the cache's arrays (what the build held besides them), and the peak RSS of each pool
  worker (sampled from /proc), the largest shown;
- the all-cores build again at N/2 (a second CSV naming the first half of the images): what the
  build holds besides the arrays should not grow with N (the names and transcripts wait in a
  temporary SQLite file, `item_store`): excess(N) - excess(N/2) divided by the N/2 extra images
  is a few bytes of index arrays per image, against 8 kB of image. (Below about 50,000 images
  the excess is still filling fixed-size buffers, SQLite's page cache and the decoding pool's
  chunks in flight; so the comparison starts at N/2, not lower.)

Ratios: decoding images/s, all cores / one by one (target >= 1.8 on 2 cores); the whole build's
images/s, all / one (no target: listing the folder, pairing transcripts, the split and writing the
HDF5 cache stay in one process, about a quarter of a one-by-one build); and the excess per extra
image over an image's bytes (target <= 0.02). The CPU seconds column (this process and its pool,
sampled) shows what the pool costs beside one-by-one decoding when the machine is too busy for
the wall times to show a speed-up.

    python bench/bench_image_text_cache.py            # N = 100,000: ~3 min on 2 cores
    python bench/bench_image_text_cache.py --quick    # N = 5,000: ~20 s
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _common

TARGET_SPEEDUP = 1.8
TARGET_EXCESS = 0.02
HEIGHT, WIDTH = 32, 256
WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "Amy", "Bob", "42", "7")


def write_folder(folder: Path, n: int, seed: int = 0) -> None:
    """``n`` PNG lines and labels.csv (all of them), half.csv (the first n // 2)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        sub = folder / "images" / f"{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True, exist_ok=True)
        text = " ".join(WORDS[int(k)] for k in rng.integers(0, len(WORDS), 3))
        image = Image.new("L", (int(rng.integers(150, 251)), 32), int(rng.integers(200, 256)))
        ImageDraw.Draw(image).text((3, 10), text, fill=int(rng.integers(0, 90)))
        name = f"images/{i // 1000:03d}/{i:06d}.png"
        image.save(folder / name)
        rows.append(f"{name},{text}")
    (folder.parent / "half.csv").write_text("filename,text\n" + "\n".join(rows[: n // 2]) + "\n")
    (folder / "labels.csv").write_text("filename,text\n" + "\n".join(rows) + "\n")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the forkserver and its workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def child(folder: str, workers: int, labels: str | None) -> int:
    """One build in this fresh process; prints its figures as one JSON line."""
    import h5py  # noqa: F401  (imported before the "before" RSS: libraries are not the build's)
    import tqdm.auto  # noqa: F401
    from PIL import Image, ImageDraw, ImageOps, PngImagePlugin  # noqa: F401

    from text_recognizer.datasets.image_text import ImageTextDataset

    ds = ImageTextDataset(
        data_dir=folder,
        labels_file=labels,
        image_height=HEIGHT,
        image_width=WIDTH,
        max_length=64,
        workers=workers,
    )
    decode_s: list[float] = []
    original = ds._decode

    def timed_decode(kept: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(kept)
        finally:
            decode_s.append(time.perf_counter() - start)

    ds._decode = timed_decode  # type: ignore[method-assign]
    peaks: dict[int, int] = {}
    cpu: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            for pid in descendants(os.getpid()):
                peaks[pid] = max(peaks.get(pid, 0), peak_kib(pid))
                cpu[pid] = max(cpu.get(pid, 0.0), cpu_seconds(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    rss_before = peak_kib(os.getpid())  # the peak so far: imports, before any image is read
    own = resource.getrusage(resource.RUSAGE_SELF)
    sampler.start()
    start = time.perf_counter()
    arrays, _ = ds._build_cache()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # VmHWM, not ru_maxrss: Linux keeps the parent's ru_maxrss across fork + exec
    peak = peak_kib(os.getpid())
    own_cpu = usage.ru_utime + usage.ru_stime - own.ru_utime - own.ru_stime
    images = sum(len(arrays[k]) for k in ("x_trainval", "x_test"))
    array_bytes = sum(a.nbytes for a in arrays.values())
    print(
        json.dumps(
            {
                "workers": workers,
                "images": images,
                "seconds": seconds,
                "decode_seconds": decode_s[0],
                "array_bytes": array_bytes,
                "rss_before_bytes": rss_before * 1024,
                "peak_bytes": peak * 1024,
                "excess_bytes": peak * 1024 - rss_before * 1024 - array_bytes,
                "worker_peak_bytes": sorted((v * 1024 for v in peaks.values()), reverse=True),
                # this process's CPU and its pool's (sampled every 50 ms: a lower bound)
                "cpu_seconds": own_cpu + sum(cpu.values()),
                "skipped": ds.skipped,
            }
        )
    )
    return 0


def build(folder: Path, workers: int, labels: Path | None = None) -> dict[str, Any]:
    """One build in a fresh process with its own data dir (so nothing is cached)."""
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as data:
        env = {**os.environ, "TEXT_RECOGNIZER_DATA_DIR": data}
        command = [sys.executable, __file__, "--child", str(folder), str(workers)]
        if labels is not None:
            command.append(str(labels))
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"build with workers={workers} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1], int(argv[2]), argv[3] if len(argv) > 3 else None)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 5,000")
    parser.add_argument("--n", type=int, default=None, help="images (default 100,000)")
    parser.add_argument("--workers", type=int, default=0, help="the parallel side (0: all cores)")
    args = parser.parse_args(argv)
    n = args.n or (5_000 if args.quick else 100_000)
    env = _common.environment()
    cores = len(os.sched_getaffinity(0))
    env["cores_usable"] = cores
    _common.print_header(f"ImageTextDataset cache of {n:,} line images, all cores vs one", env)
    with tempfile.TemporaryDirectory(prefix="bench_image_text_") as tmp:
        folder = Path(tmp) / "lines"
        started = time.perf_counter()
        write_folder(folder, n)
        print(f"wrote {n:,} PNG lines in {time.perf_counter() - started:.0f} s", flush=True)
        results = {
            "serial": build(folder, 1),
            "parallel": build(folder, args.workers),
            "parallel_half": build(folder, args.workers, Path(tmp) / "half.csv"),
        }
    print(
        f"{'build':18} {'workers':>7} {'images':>8} {'s':>7} {'img/s':>8} {'decode img/s':>12} "
        f"{'arrays MB':>9} {'excess MB':>9} {'worker MB':>9} {'CPU s':>6}"
    )
    for name, r in results.items():
        worker = max(r["worker_peak_bytes"], default=0)
        print(
            f"{name:18} {r['workers'] or cores:7d} {r['images']:8d} {r['seconds']:7.2f} "
            f"{r['images'] / r['seconds']:8.0f} {r['images'] / r['decode_seconds']:12.0f} "
            f"{r['array_bytes'] / 1e6:9.1f} {r['excess_bytes'] / 1e6:9.1f} {worker / 1e6:9.1f} "
            f"{r['cpu_seconds']:6.1f}"
        )
    serial, parallel, half = results["serial"], results["parallel"], results["parallel_half"]
    speedup = (parallel["images"] / parallel["seconds"]) / (serial["images"] / serial["seconds"])
    decode_speedup = serial["decode_seconds"] / parallel["decode_seconds"]
    extra = parallel["images"] - half["images"]
    per_image = (parallel["excess_bytes"] - half["excess_bytes"]) / max(1, extra)
    image_bytes = HEIGHT * WIDTH
    print(
        f"\nexcess = peak RSS - RSS before the build - the cache's arrays; its growth from N/2 to "
        f"N: {per_image:.0f} bytes per extra image (an image is {image_bytes} bytes). Decoding "
        f"alone: {decode_speedup:.2f}x. {cores} usable cores, load "
        f"{_common.load_average()}.\n"
    )
    env["load_average_at_end"] = _common.load_average()
    path = _common.write_results(
        "bench_image_text_cache",
        {
            "benchmark": "image_text_cache",
            "n": n,
            "targets": {"speedup": TARGET_SPEEDUP, "excess_per_image": TARGET_EXCESS},
            "environment": env,
            "results": results,
            "speedup": speedup,
            "decode_speedup": decode_speedup,
            "excess_bytes_per_extra_image": per_image,
        },
    )
    print(f"results: {path}")
    print(
        _common.ratio_line(
            f"image_text_cache[{n}]", "decoding images/s all/one", decode_speedup, TARGET_SPEEDUP
        )
    )
    print(
        f"ratio image_text_cache[{n} build] images/s all/one = {speedup:.2f} (the whole build: "
        "listing, pairing and writing are not parallel; no target)"
    )
    ratio = per_image / image_bytes
    verdict = "" if ratio <= TARGET_EXCESS else "  MISSED"
    print(
        f"ratio image_text_cache[memory] excess per extra image / image bytes = {ratio:.3f} "
        f"(target <= {TARGET_EXCESS:g}){verdict}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
