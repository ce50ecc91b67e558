"""The README's quick start stays true: train, test (CI runs that command), read an image with the
run; the config is valid and the image the predict command reads is in the repository."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import PROJECT_ROOT
from text_recognizer.config import load_config


def quick_start_commands() -> list[str]:
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_readme_starts_with_train_test_and_predict_and_ci_runs_the_tests():
    commands = quick_start_commands()
    assert len(commands) == 3 and all("\n" not in c for c in commands), commands
    main_job, tests, predict = commands
    assert "constraints.txt" in main_job and "constraints.txt" in tests
    ci = (PROJECT_ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, "the README's test command must appear verbatim in .ci/run"
    assert predict.startswith("python -m text_recognizer.predict --model ")
    assert (PROJECT_ROOT / predict.split()[-1]).is_file()


def test_quick_start_installs_into_a_virtual_environment(tmp_path: Path):
    """Both setup commands make and activate .venv before pip runs, so a system Python that
    refuses installs (PEP 668) is never asked: with a `pip` on the PATH that refuses like
    Debian's, the commands' own steps still reach a working pip, the environment's."""
    main_job, tests, _ = quick_start_commands()
    for command in (main_job, tests):
        steps = command.split(" && ")
        assert steps[:2] == ["python3 -m venv .venv", ". .venv/bin/activate"], command
        assert steps[2].startswith("pip install -c constraints.txt -e ")
    refusing = tmp_path / "bin"
    refusing.mkdir()
    (refusing / "pip").write_text(
        "#!/bin/sh\necho 'error: externally-managed-environment' >&2\nexit 1\n"
    )
    (refusing / "pip").chmod(0o755)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    setup = " && ".join(main_job.split(" && ")[:2])
    python_dir = Path(sys.executable).parent  # python3 as the suite runs it
    out = subprocess.run(
        ["bash", "-c", f"{setup} && pip --version && {setup} && pip --version"],
        cwd=checkout,
        env={**os.environ, "PATH": f"{refusing}:{python_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "externally-managed" not in out.stderr
    assert out.stdout.count(str(checkout / ".venv")) == 2  # made once, reused the second time


def test_quick_start_config_is_valid_and_needs_no_download():
    main_job = quick_start_commands()[0]
    path = re.search(r"(training/experiments/\S+\.json)", main_job).group(1)
    config = load_config(str(PROJECT_ROOT / path))
    assert config["dataset"].startswith("Synthetic")


def test_quick_start_predict_command_reads_the_quick_start_run(tmp_path: Path):
    """The quick start's run, cut down to seconds, with no --save: the README's predict command
    finds it and reads the image (what it reads depends on the full run: not checked here)."""
    main_job, _, predict = quick_start_commands()
    train = main_job.rsplit("&& ", 1)[1]
    tiny = ["--dataset_args.num_train=64", "--dataset_args.num_test=16", "--train_args.epochs=1"]
    env = {
        **os.environ,
        "TEXT_RECOGNIZER_RUNS_DIR": str(tmp_path / "runs"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # `python` is this one
    }
    out = subprocess.run(
        [*shlex.split(train), *tiny, "--nowandb"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    command = predict.replace("runs/quickstart/", f"{tmp_path}/runs/quickstart/") + " --json"
    out = subprocess.run(
        ["bash", "-c", command], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)
    assert row["image"] == "docs/quickstart_line.png" and 0 <= row["confidence"] <= 1
