"""prepare_experiments: validation of the whole file, shell quoting, and GNU parallel end to end."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, run_script
from text_recognizer.leasing.cpu_share import usable_cores
from text_recognizer.leasing.lease_folder import ENV_LEASES
from text_recognizer.orchestration.prepare import command_line, prepare_experiments_main
from text_recognizer.run.records import RunRecord


def gnu_parallel() -> str | None:
    """The path of GNU parallel (not moreutils' `parallel`, a different tool), or None."""
    path = shutil.which("parallel")
    if path is None:
        return None
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return path if "GNU parallel" in out.stdout else None


PARALLEL = gnu_parallel()
NO_PARALLEL = "GNU parallel is not installed (Debian package `parallel`; .ci/run installs it)"
needs_parallel = pytest.mark.skipif(PARALLEL is None, reason=NO_PARALLEL)

TINY = {
    "dataset": "SyntheticCharactersDataset",
    "dataset_args": {"num_train": 400, "num_test": 100, "charset": "digits"},
    "model": "CharacterModel",
    "network": "mlp",
    "network_args": {"num_layers": 2, "layer_size": 32},
    "train_args": {"batch_size": 64, "epochs": 1},
}
# Valid, but fails while running: weights blow up to inf at once, the run stops after 2 bad batches.
DIVERGES = {
    **TINY,
    "run_name": "diverges",
    "train_args": {
        "batch_size": 16,
        "epochs": 1,
        "optimizer": "sgd",
        "learning_rate": 10.0,
        "weight_decay": 10.0,
        "max_nonfinite_batches": 2,
    },
}


def write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def prepare(capsys, *args: str) -> tuple[int, str, str]:
    code = prepare_experiments_main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


# ----- validation --------------------------------------------------------------------------------


def test_every_experiment_is_validated_before_anything_is_printed(tmp_path, capsys):
    bad = [
        TINY,
        TINY,
        {**TINY, "network_args": {"foo": 1}},
        {**TINY, "train_args": {"epochs": 0}},
        TINY,
    ]
    path = write(tmp_path / "e.json", {"experiment_group": "G", "experiments": bad})
    code, out, err = prepare(capsys, path)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("error: experiments[2]: unknown key 'foo' in network_args")
    assert lines[1].startswith("error: experiments[3]: train_args.epochs must be")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "malformed JSON in"),
        ("[]", "must hold a JSON object"),
        ({"experiments": []}, "'experiments' must be a non-empty list"),
        ({"experiments": {"a": 1}}, "'experiments' must be a non-empty list"),
        ({"experiment_group": "G", "experiment": [TINY]}, "unknown key 'experiment'"),
        ({"experiment_group": 3, "experiments": [TINY]}, "experiment_group must be a string"),
        ({"experiments": [TINY, [1]]}, "experiments[1] must be a JSON object, got list"),
        (
            {"experiment_group": "G", "experiments": [{**TINY, "experiment_group": "H"}]},
            "experiments[0]: experiment_group 'H' differs from the file's 'G'",
        ),
        (
            {"experiment_group": "bad/group", "experiments": [TINY]},
            "experiments[0]: experiment_group",
        ),
    ],
)
def test_malformed_files_are_one_line_exit_2(tmp_path, capsys, content, message):
    code, out, err = prepare(capsys, write(tmp_path / "e.json", content))
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_missing_file(tmp_path, capsys):
    code, out, err = prepare(capsys, tmp_path / "nope.json")
    assert code == 2 and out == "" and "does not exist" in err


def test_the_script_prints_one_command_per_experiment_with_the_group(tmp_path):
    experiments = {"experiment_group": "My Group", "experiments": [TINY, {**TINY, "run_name": "b"}]}
    path = write(tmp_path / "e.json", experiments)
    out = run_script("training/prepare_experiments.py", str(path), "--save", "--nowandb")
    assert out.returncode == 0 and out.stderr == ""
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    for line, experiment in zip(lines, experiments["experiments"], strict=True):
        words = shlex.split(line)
        assert words[:3] == ["python", "training/run_experiment.py", "--gpu=-1"]
        assert words[4:] == ["--save", "--nowandb"]
        assert json.loads(words[3]) == {"experiment_group": "My Group", **experiment}
    bad = run_script("training/prepare_experiments.py", str(tmp_path / "missing.json"))
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.startswith("error: ")


def test_sample_files_are_valid(capsys):
    for name in ("sample.json", "sample_synthetic.json"):
        code, out, err = prepare(capsys, PROJECT_ROOT / "training" / "experiments" / name)
        assert code == 0, err
        assert len(out.splitlines()) == 3


# ----- quoting -----------------------------------------------------------------------------------

ECHO_ARGV = """#!{python}
import json, os, sys
fd = os.open(os.environ["ARGV_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
os.write(fd, (json.dumps(sys.argv[1:]) + "\\n").encode())
"""


@pytest.mark.parametrize("runner", ["bash", "parallel"])
def test_commands_survive_the_shell_and_gnu_parallel(tmp_path, capsys, runner):
    """Any JSON (quotes, $, backquotes, {}, backslashes, newlines) reaches the script unchanged."""
    if runner == "parallel" and PARALLEL is None:
        pytest.skip(NO_PARALLEL)
    tricky = tmp_path / 'it\'s $HOME `id` {} {1} {#} \\ "q" ;&|*?\n\tnext line'
    tricky.mkdir()
    experiments = [
        {**TINY, "dataset_args": {**TINY["dataset_args"], "data_dir": str(tricky)}},
        {**TINY, "run_name": "x = y + z", "network_args": {}},
    ]
    path = write(tmp_path / "e.json", {"experiment_group": "Quoting", "experiments": experiments})
    fake_python = tmp_path / "fake python"
    fake_python.write_text(ECHO_ARGV.format(python=sys.executable))
    fake_python.chmod(0o755)
    code, out, err = prepare(capsys, path, "--python", shlex.quote(str(fake_python)), "--nowandb")
    assert code == 0, err
    log = tmp_path / "argv.jsonl"
    env = {**os.environ, "ARGV_LOG": str(log)}
    if runner == "bash":
        for line in out.splitlines():
            subprocess.run(["bash", "-c", line], env=env, check=True)
    else:
        subprocess.run([PARALLEL, "-j2"], input=out, env=env, text=True, check=True)

    def decoded(argv: list[str]) -> list:
        return [*argv[:2], json.loads(argv[2]), *argv[3:]]

    seen = [decoded(json.loads(x)) for x in log.read_text().splitlines()]
    expected = [
        [
            "training/run_experiment.py",
            "--gpu=-1",
            {"experiment_group": "Quoting", **e},
            "--nowandb",
        ]
        for e in experiments
    ]
    assert sorted(seen, key=json.dumps) == sorted(expected, key=json.dumps)


def test_command_line_quotes_a_python_with_arguments():
    line = command_line({"a": "b'c"}, python="/opt/my env/bin/python -u", save=True)
    assert shlex.split(line) == [
        "/opt/my",
        "env/bin/python",
        "-u",
        "training/run_experiment.py",
        "--gpu=-1",
        '{"a":"b\'c"}',
        "--save",
    ]


# ----- GNU parallel end to end -------------------------------------------------------------------


@needs_parallel
def test_parallel_end_to_end_records_every_run(tmp_path, runs_dir):
    """prepare_experiments | parallel -j2 with two experiments that fail while running: the others
    finish, each failure is recorded with its error, and parallel's exit status counts them."""
    experiments = {
        "experiment_group": "Parallel E2E",
        "experiments": [
            {**TINY, "run_name": "mlp-a"},
            DIVERGES,
            {**TINY, "run_name": "mlp-b", "network_args": {"num_layers": 3, "layer_size": 32}},
            {**DIVERGES, "run_name": "diverges-too"},
        ],
    }
    path = write(tmp_path / "e.json", experiments)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # let runs share cores
    env[ENV_LEASES] = str(tmp_path / "leases")
    prepare_cmd = shlex.join(
        [
            sys.executable,
            "training/prepare_experiments.py",
            str(path),
            "--nowandb",
            "--python",
            sys.executable,
        ]
    )
    out = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {prepare_cmd} | {PARALLEL} -j2"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 2, out.stderr  # GNU parallel: the number of failed jobs
    runs = {p.name: RunRecord.read(p) for p in (runs_dir / "parallel-e2e").iterdir()}
    assert sorted(runs) == ["diverges", "diverges-too", "mlp-a", "mlp-b"]
    for name in ("diverges", "diverges-too"):
        failed = runs[name]["summary"]
        assert failed["status"] == "failed" and "non-finite" in failed["error"]
        assert (runs_dir / "parallel-e2e" / name / "error.log").exists()
    threads = max(1, usable_cores() // 2)
    for name in ("mlp-a", "mlp-b"):
        summary = runs[name]["summary"]
        assert summary["status"] == "finished", summary
        assert 0.0 <= summary["test_accuracy"] <= 1.0 and len(runs[name]["metrics"]) == 1
        assert runs[name]["config"]["experiment_group"] == "Parallel E2E"
    for record in runs.values():  # side by side under -j2: the cores are split, not oversubscribed
        assert record["summary"]["num_threads"] == threads, record["summary"]
        assert "GNU parallel -j2" in record["summary"]["threads_reason"]
    assert out.stderr.count("no GPU available") == 4  # --gpu=-1 without a GPU: one notice per run
