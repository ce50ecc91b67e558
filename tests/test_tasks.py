"""tasks/*.sh: every shortcut is executable and parses; bench.sh ends with one table of ratios."""

from __future__ import annotations

import json
import os
import shlex
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


# ----- files and flags in any order; settings passed through to the runs ---------------------------
def bash(script: str, *args: str, env: dict[str, str] | None = None, cwd: Path = PROJECT_ROOT):
    full = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", script, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**full, **(env or {})},
        timeout=300,
    )


def test_split_args_tells_files_from_flags(tmp_path: Path) -> None:
    script = tmp_path / "show.sh"
    script.write_text(
        f"source {PROJECT_ROOT / 'tasks' / 'lib' / 'args.sh'}\n"
        'split_args "--beam --gpu" "$@"\n'
        'printf "P:%s\\n" "${positional[@]}"; printf "F:%s\\n" "${flags[@]}"\n'
    )
    out = bash(str(script), "--json", "run", "--beam", "3", "a.png", "--gpu=-1", "--", "-b.png")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "P:run",
        "P:a.png",
        "P:-b.png",
        "F:--json",
        "F:--beam",
        "F:3",
        "F:--gpu=-1",
    ]


@pytest.fixture
def fake_parallel(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A `parallel` on the PATH that only records the commands it was given."""
    bin_dir, seen = tmp_path / "bin", tmp_path / "commands.txt"
    bin_dir.mkdir()
    (bin_dir / "parallel").write_text('#!/usr/bin/env bash\ncat > "$SEEN"\n')
    (bin_dir / "parallel").chmod(0o755)
    path = f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    return {"PATH": path, "SEEN": str(seen)}, seen


@pytest.mark.parametrize("file_first", [True, False])
def test_sample_experiments_take_flags_and_settings_before_or_after_the_file(
    fake_parallel, file_first: bool
) -> None:
    env, seen = fake_parallel
    flags = ["--nowandb", "--train_args.epochs=1", "--gpu", "0", "--no-save"]
    file = "training/experiments/sample_synthetic.json"
    argv = [file, *flags] if file_first else [*flags, file]
    out = bash("tasks/run_sample_experiments.sh", *argv, env=env)
    assert out.returncode == 0, out.stderr
    commands = seen.read_text().splitlines()
    count = len(json.loads((PROJECT_ROOT / file).read_text())["experiments"])
    assert len(commands) == count
    for command in commands:
        words = shlex.split(command)
        assert words[:2] == ["python", "training/run_experiment.py"] and "--nowandb" in words
        assert words[-4:] == ["--train_args.epochs=1", "--gpu", "0", "--no-save"]


def test_sample_experiments_refuse_a_bad_setting_before_any_run(fake_parallel) -> None:
    env, seen = fake_parallel
    out = bash("tasks/run_sample_experiments.sh", "--train_args.epoch=1", env=env)
    assert out.returncode == 2 and not seen.exists()
    assert "unknown key 'epoch' in train_args" in out.stderr


def test_sweep_local_takes_flags_before_the_yaml() -> None:
    out = bash("tasks/sweep_local.sh", "--check")  # was: the YAML "--check"
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("training/sweep_mnist.yaml: valid")
    out = bash("tasks/sweep_local.sh", "--check", "training/sweep_emnist.yaml")
    assert out.returncode == 0 and out.stdout.startswith("training/sweep_emnist.yaml: valid")


@pytest.mark.parametrize(
    "script",
    [
        "train_character_predictor.sh",
        "train_line_predictor.sh",
        "train_paragraph_line_predictor.sh",
    ],
)
def test_training_tasks_pass_settings_on(shared_data: Path, tmp_path: Path, script: str) -> None:
    out = bash(
        str(PROJECT_ROOT / "tasks" / script),
        "--print-config",
        "--train_args.epochs=3",
        "--dataset_args.validation_fraction=0.2",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    config = json.loads(out.stdout)
    assert config["train_args"]["epochs"] == 3
    assert config["dataset_args"]["validation_fraction"] == 0.2
