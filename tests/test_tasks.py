"""tasks/*.sh: every shortcut is executable and parses; bench.sh ends with one table of ratios."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT

TASKS = sorted((PROJECT_ROOT / "tasks").glob("*.sh"))
EXPECTED = {
    "train_character_predictor.sh",
    "train_line_predictor.sh",
    "run_sample_experiments.sh",
    "sweep_local.sh",
    "sweep_wandb.sh",
    "test.sh",
    "lint.sh",
    "bench.sh",
}


def test_expected_tasks_exist() -> None:
    assert {p.name for p in TASKS} >= EXPECTED


@pytest.mark.parametrize("script", TASKS, ids=lambda p: p.name)
def test_task_is_executable_and_parses(script: Path) -> None:
    assert os.access(script, os.X_OK), f"chmod +x {script}"
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_bench_prints_one_table_of_ratios(tmp_path: Path) -> None:
    (tmp_path / "tasks").mkdir()
    shutil.copy(PROJECT_ROOT / "tasks" / "bench.sh", tmp_path / "tasks" / "bench.sh")
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "bench_alpha.py").write_text(
        "print('# header')\n"
        "print('ratio alpha speed = 2.50 (target >= 2)')\n"
        "print('ratio alpha memory = 0.90 (target >= 1)  MISSED')\n"
    )
    (bench / "bench_beta.py").write_text("print('ratio beta latency = 1.10 (target >= 1)')\n")
    (bench / "bench_gamma.py").write_text("raise SystemExit(3)\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run(
        ["bash", "tasks/bench.sh"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert out.returncode == 1  # one benchmark failed
    table = out.stdout.split("== ratios (all benchmarks)\n")[1].splitlines()
    assert table[0].split() == ["bench", "ratio", "verdict"]
    rows = [r.split() for r in table[1:]]
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        ("alpha", "alpha", "ok"),
        ("alpha", "alpha", "MISSED"),
        ("beta", "beta", "ok"),
    ]
    assert "!! bench/bench_gamma.py exited 3" in out.stdout
