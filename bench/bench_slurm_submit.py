"""Slurm: how long submitting an experiments file takes, and an array against ``parallel -j2``.

1. ``prepare_experiments.py FILE --slurm`` with 100 tiny experiments, the whole command (Python's
   start, validating 100 configs, pickling 100 tasks, the one ``sbatch`` of the array); the array
   is cancelled right after. Target: under 5 s (one array, not 100 ``sbatch`` calls).
2. ``--compare``: the three ``sample_synthetic.json`` runs as a Slurm array (``--cpus-per-run 1``,
   ``--wait``) against ``prepare_experiments.py FILE | parallel -j2`` on the same machine, the
   dataset cache built first. Target: within 10 % (on a one-node cluster of 2 CPUs, two tasks run
   at once, as parallel -j2 runs two).

Needs a Slurm cluster that answers (``bash tasks/slurm_cluster.sh start`` as root gives a
one-node one on this machine).

    python bench/bench_slurm_submit.py              # the submit time (~10 s)
    python bench/bench_slurm_submit.py --compare    # and the array against parallel -j2 (~4 min)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import environment, median, print_header, ratio_line, write_results

ROOT = Path(__file__).resolve().parent.parent
PREPARE = str(ROOT / "training" / "prepare_experiments.py")
SAMPLE = ROOT / "training" / "experiments" / "sample_synthetic.json"


def tiny_experiments(n: int) -> dict:
    base = {
        "dataset": "SyntheticCharactersDataset",
        "dataset_args": {"num_train": 200, "num_test": 50, "charset": "digits"},
        "model": "CharacterModel",
        "network": "mlp",
        "train_args": {"epochs": 1},
    }
    return {
        "experiment_group": "bench slurm submit",
        "experiments": [{**base, "train_args": {"epochs": 1, "seed": i}} for i in range(n)],
    }


def time_submit(n: int, tmp: Path) -> float:
    path = tmp / "experiments.json"
    path.write_text(json.dumps(tiny_experiments(n)))
    env = {**os.environ, "TEXT_RECOGNIZER_RUNS_DIR": str(tmp / "runs")}
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, PREPARE, str(path), "--slurm", "--nowandb", "--cpus-per-run", "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    elapsed = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"submit failed: {out.stderr.strip()}")
    job_id = out.stdout.strip().splitlines()[-1]
    subprocess.run(["scancel", job_id], check=False)
    return elapsed


def time_array(tmp: Path) -> float:
    env = {**os.environ, "TEXT_RECOGNIZER_RUNS_DIR": str(tmp / "array-runs")}
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            PREPARE,
            str(SAMPLE),
            "--slurm",
            "--nowandb",
            "--cpus-per-run",
            "1",
            "--wait",
        ],
        check=True,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def time_parallel(tmp: Path) -> float:
    env = {**os.environ, "TEXT_RECOGNIZER_RUNS_DIR": str(tmp / "parallel-runs")}
    started = time.perf_counter()
    lines = subprocess.run(
        [sys.executable, PREPARE, str(SAMPLE), "--nowandb", "--python", sys.executable],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    ).stdout
    subprocess.run(
        ["parallel", "-j2"],
        input=lines,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="experiments submitted (100)")
    parser.add_argument("--compare", action="store_true", help="also the array vs parallel -j2")
    parser.add_argument(
        "--reps", type=int, default=2, help="array and parallel timings, alternated (2)"
    )
    args = parser.parse_args()
    env = environment()
    print_header("Slurm: submitting an experiments file, and an array against parallel -j2", env)
    if shutil.which("sbatch") is None:
        print("no sbatch: nothing measured (start a cluster: bash tasks/slurm_cluster.sh start)")
        return 0
    results: dict = {"environment": env}
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as name:
        tmp = Path(name)
        seconds = time_submit(args.runs, tmp)
        results["submit_seconds"] = seconds
        print(f"submit {args.runs} experiments as one Slurm array: {seconds:.2f} s")
        print(ratio_line(f"slurm_submit[{args.runs}]", "seconds", seconds, 5.0, "<="))
        if args.compare and shutil.which("parallel") is None:
            print("no GNU parallel: the comparison is left out")
        elif args.compare:
            time_parallel(tmp / "warm")  # builds the dataset cache once, untimed
            arrays, parallels = [], []
            for rep in range(args.reps):  # alternated: a busy spell slows both sides
                arrays.append(round(time_array(tmp / f"a{rep}"), 1))
                parallels.append(round(time_parallel(tmp / f"p{rep}"), 1))
            array, parallel = median(arrays), median(parallels)
            results.update(array_seconds=arrays, parallel_seconds=parallels)
            print(
                f"sample_synthetic.json: Slurm array {array:.1f} s, parallel -j2 {parallel:.1f} s "
                f"(medians; each time: array {arrays}, parallel {parallels})"
            )
            print(ratio_line("sample_synthetic", "array/parallel-j2", array / parallel, 1.1, "<="))
    write_results("bench_slurm_submit", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
