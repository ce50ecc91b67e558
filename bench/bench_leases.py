"""GPU leases and many experiments at once: lease latency, and parallel against one after another.

1. Lease latency without contention: ``GPUManager.acquire()`` + ``Lease.release()`` on a fake
   two-GPU inventory (the lock files are real; NVML is left out because its query time depends on
   the driver, not on us; with a driver present it is measured too). Target: p95 under 10 ms.
2. Wall time of ``training/experiments/sample_synthetic.json`` (3 small runs) run the way users run
   them, ``prepare_experiments.py FILE | parallel -jN``, against the same commands one after
   another, and with the CPU thread sharing of side-by-side runs turned off
   (``TEXT_RECOGNIZER_FAIR_THREADS=0``: every run takes torch's default, all cores) to show what
   the sharing buys. The dataset cache is built once before any timing; every mode is timed in the
   same process, back to back, so the ratios compare like with like.

    python bench/bench_leases.py            # ~2 minutes on 2 cores
    python bench/bench_leases.py --quick    # lease latency and -j2 only (~1 minute)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

ROOT = _common.BENCH_DIR.parent
EXPERIMENTS = ROOT / "training" / "experiments" / "sample_synthetic.json"
LATENCY_TARGET_MS = 10.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def lease_latency(iterations: int, lease_dir: Path) -> dict[str, Any]:
    """Milliseconds per acquire + release, median and p95, plus the first (cold) lease."""
    from text_recognizer.leasing.gpu_inventory import FakeInventory, GpuInfo
    from text_recognizer.leasing.manager import GPUManager

    gpus = [GpuInfo(i, f"GPU-bench-{i}", 500.0, 16000.0, 1.0, "fake") for i in range(2)]

    def manager() -> GPUManager:
        return GPUManager(FakeInventory(gpus), lease_dir, env={})

    start = time.perf_counter()
    lease = manager().acquire("bench")  # first lease in the process: folder created and checked
    assert lease is not None
    lease.release()
    cold = (time.perf_counter() - start) * 1000
    times = []
    for _ in range(iterations):
        m = manager()
        start = time.perf_counter()
        lease = m.acquire("bench")
        assert lease is not None
        lease.release()
        times.append((time.perf_counter() - start) * 1000)
    result = {
        "iterations": iterations,
        "cold_ms": cold,
        "median_ms": statistics.median(times),
        "p95_ms": percentile(times, 0.95),
        "max_ms": max(times),
    }
    try:  # the same with NVML, where a driver is present
        from text_recognizer.errors import NoGpuDriver
        from text_recognizer.leasing.gpu_inventory import NvmlInventory

        NvmlInventory().gpus()
    except NoGpuDriver as e:
        result["nvml"] = f"not measured ({e})"
    else:
        nvml_times = []
        for _ in range(max(10, iterations // 10)):
            m = GPUManager(NvmlInventory(), lease_dir, env={}, max_memory_percent=100.0)
            m.max_utilization_percent = 100.0
            start = time.perf_counter()
            lease = m.acquire("bench")
            if lease is not None:
                lease.release()
            nvml_times.append((time.perf_counter() - start) * 1000)
        result["nvml_median_ms"] = statistics.median(nvml_times)
        result["nvml_p95_ms"] = percentile(nvml_times, 0.95)
    return result


def run_commands(lines: list[str], jobs: int | None, env: dict[str, str]) -> dict[str, Any]:
    """Run the prepared commands under ``parallel -jN`` (or one after another); wall time."""
    start = time.perf_counter()
    if jobs is None:
        codes = [
            subprocess.run(["bash", "-c", line], cwd=ROOT, env=env).returncode for line in lines
        ]
        failed = sum(c != 0 for c in codes)
    else:
        proc = subprocess.run(
            ["parallel", f"-j{jobs}"], input="\n".join(lines) + "\n", text=True, cwd=ROOT, env=env
        )
        failed = proc.returncode
    return {"wall_s": time.perf_counter() - start, "failed": failed}


def threads_used(runs_dir: Path) -> list[int]:
    out = []
    for summary in sorted(runs_dir.rglob("summary.json")):
        out.append(json.loads(summary.read_text()).get("num_threads"))
    return out


def experiments_wall_times(quick: bool, work: Path) -> dict[str, Any]:
    prepared = subprocess.run(
        [sys.executable, "training/prepare_experiments.py", str(EXPERIMENTS), "--nowandb",
         "--python", shlex.quote(sys.executable)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    lines = prepared.stdout.splitlines()
    base = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    base.update(
        TEXT_RECOGNIZER_DATA_DIR=str(work / "data"),
        TEXT_RECOGNIZER_GPU_LEASES=str(work / "leases"),
        WANDB_MODE="disabled",
    )
    # Build the dataset cache once, so that no mode pays for it (all three share one dataset).
    config = json.loads(shlex.split(lines[0])[-2])
    subprocess.run(
        [sys.executable, "-c",
         "import json, sys; from text_recognizer.config import validate_config; "
         "from text_recognizer.datasets import DATASETS; c = validate_config(json.loads(sys.argv[1])); "
         "DATASETS[c['dataset']].load()(**c['dataset_args']).load_or_generate_data()",
         json.dumps(config)],
        cwd=ROOT, env=base, check=True, capture_output=True,
    )  # fmt: skip
    modes: list[tuple[str, int | None, bool]] = [
        ("one after another", None, True),
        ("parallel -j2, threads shared", 2, True),
        ("parallel -j2, not shared", 2, False),
    ]
    if not quick:
        modes += [("parallel -j3, threads shared", 3, True), ("parallel -j3, not shared", 3, False)]
    results: dict[str, Any] = {
        "experiments": str(EXPERIMENTS.relative_to(ROOT)),
        "runs": len(lines),
    }
    for name, jobs, shared in modes:
        runs_dir = work / "runs" / name.replace(" ", "_").replace(",", "")
        env = {**base, "TEXT_RECOGNIZER_RUNS_DIR": str(runs_dir)}
        if not shared:
            env["TEXT_RECOGNIZER_FAIR_THREADS"] = "0"
        result = run_commands(lines, jobs, env)
        result["threads"] = threads_used(runs_dir)
        results[name] = result
        print(
            f"{name:32s} {result['wall_s']:6.1f} s   threads per run {result['threads']}"
            + (f"   FAILED RUNS: {result['failed']}" if result["failed"] else ""),
            flush=True,
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations, -j2 only")
    args, _ = parser.parse_known_args()
    env_info = _common.environment()
    _common.print_header("GPU leases and experiments side by side", env_info)
    work = Path(tempfile.mkdtemp(prefix="bench-leases-"))
    try:
        latency = lease_latency(200 if args.quick else 1000, work / "latency-leases")
        print(
            f"lease acquire+release, no contention (fake 2-GPU inventory, real locks): "
            f"median {latency['median_ms']:.3f} ms, p95 {latency['p95_ms']:.3f} ms, "
            f"max {latency['max_ms']:.3f} ms over {latency['iterations']}; first lease in a "
            f"process (folder check included) {latency['cold_ms']:.2f} ms"
        )
        if "nvml_p95_ms" in latency:
            print(
                f"with NVML: median {latency['nvml_median_ms']:.2f} ms, "
                f"p95 {latency['nvml_p95_ms']:.2f} ms"
            )
        else:
            print(f"with NVML: {latency['nvml']}")
        payload: dict[str, Any] = {"environment": env_info, "lease_latency": latency}
        if shutil.which("parallel") is None:
            print("GNU parallel is not installed (apt-get install parallel): wall times skipped")
        else:
            walls = experiments_wall_times(args.quick, work)
            payload["experiments"] = walls
        print(
            f"ratio leases latency target/p95 = {LATENCY_TARGET_MS / latency['p95_ms']:.1f} "
            f"(p95 {latency['p95_ms']:.3f} ms; target >= 1, i.e. p95 < {LATENCY_TARGET_MS:g} ms)"
        )
        if "experiments" in payload:
            w = payload["experiments"]
            seq = w["one after another"]["wall_s"]
            for jobs in (2, 3):
                shared = w.get(f"parallel -j{jobs}, threads shared")
                unshared = w.get(f"parallel -j{jobs}, not shared")
                if shared is None or unshared is None:
                    continue
                print(
                    f"ratio parallel_j{jobs} one-after-another/parallel wall time = "
                    f"{seq / shared['wall_s']:.2f} (threads shared)"
                )
                print(
                    f"ratio cpu_sharing_j{jobs} not-shared/shared wall time = "
                    f"{unshared['wall_s'] / shared['wall_s']:.2f} (> 1: sharing the cores helps)"
                )
        path = _common.write_results("leases", payload)
        print(f"# results: {path.relative_to(ROOT)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
