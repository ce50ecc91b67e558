"""The local-sweep command line and the W&B task: the resume command keeps the sweep's options,
Ctrl-C with the output piped through ``tee`` or ``head`` still says how to resume (no BrokenPipe
traceback), and ``tasks/sweep_wandb.sh`` without a W&B login says how to run offline, exit 2.

The trials here are stand-ins (a sleeping process in place of training/run_sweep.py), so the
command's own behaviour is tested in seconds; tests/test_sweeps.py runs real trials.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, TINY_CHARACTER_CONFIG, write_tiny_sweep
from text_recognizer.orchestration import local_sweep as ls

BASE = {"experiment_group": "tiny", **TINY_CHARACTER_CONFIG}

# local_sweep with every trial replaced by a process that sleeps until it is stopped.
DRIVER = textwrap.dedent(
    """
    import subprocess, sys
    from text_recognizer.orchestration import scheduler

    def sleeper(command, env, log):
        return subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    scheduler.spawn_trial = sleeper
    from text_recognizer.orchestration.local_sweep import local_sweep_main

    sys.exit(local_sweep_main(sys.argv[1:]))
    """
)


def running(state_dir: Path) -> int:
    try:
        trials = json.loads((state_dir / "state.json").read_text())["trials"]
    except (OSError, ValueError, KeyError):
        return 0
    return sum(t["status"] == "running" for t in trials)


def no_traceback(stderr: str) -> None:
    for word in ("Traceback", "BrokenPipe", "Exception ignored"):
        assert word not in stderr, stderr


# ----- the resume command ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ([], ""),
        (["--nowandb"], " --nowandb"),
        (
            ["--jobs", "3", "--count", "2", "--gpu", "cpu", "--state", "my state", "--nowandb"],
            " --jobs 3 --count 2 --gpu cpu --state 'my state' --nowandb",
        ),
        (["-j", "2", "--gpu", "1"], " --jobs 2 --gpu 1"),
    ],
)
def test_resume_command_keeps_the_options_given(options: list[str], expected: str) -> None:
    args = ls._parser().parse_args(["training/sweep_mnist.yaml", *options])
    assert (
        ls.resume_command(args)
        == f"python training/local_sweep.py training/sweep_mnist.yaml{expected}"
    )


# ----- Ctrl-C with the output in a pipe --------------------------------------------------------


@pytest.mark.parametrize("reader", ["tee", "head -n 1"])
def test_ctrl_c_with_output_piped_says_how_to_resume(tmp_path: Path, reader: str) -> None:
    sweep = write_tiny_sweep(tmp_path)
    state = tmp_path / "state"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    err = tmp_path / "stderr.txt"
    out = tmp_path / "stdout.txt"
    args = f"{sweep} --jobs 2 --gpu cpu --nowandb --state {state}"
    line = f'"{sys.executable}" {driver} {args} 2>{err} | {reader} >{out}; exit ${{PIPESTATUS[0]}}'
    # Its own session, so a signal to its process group is a terminal's Ctrl-C: the sweep and
    # the pipe's reader get it alike (tee dies of it; head has gone after its line).
    shell = subprocess.Popen(["bash", "-c", line], cwd=PROJECT_ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while running(state) < 2:
            assert shell.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "the trials never started"
            time.sleep(0.05)
        time.sleep(0.3)
        os.killpg(shell.pid, signal.SIGINT)
        rc = shell.wait(timeout=60)
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
    stderr = err.read_text()
    no_traceback(stderr)
    assert rc == 130, stderr
    resume = (
        f"resume with: python training/local_sweep.py {sweep} --jobs 2 --gpu cpu "
        f"--state {state} --nowandb"
    )
    assert resume in stderr  # on the terminal, whatever became of the pipe
    trials = json.loads((state / "state.json").read_text())["trials"]
    assert [t["status"] for t in trials] == ["interrupted", "interrupted"]


def test_stdout_gone_before_the_end_goes_on_on_stderr(tmp_path: Path) -> None:
    """A reader that has gone before the sweep ends: the sweep keeps its lines on stderr."""
    sweep = write_tiny_sweep(tmp_path)
    state = tmp_path / "state"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    read, write = os.pipe()
    os.close(read)  # nobody reads: every write to stdout is EPIPE
    try:
        proc = subprocess.Popen(
            [sys.executable, str(driver), str(sweep), "--state", str(state), "--nowandb"],
            cwd=PROJECT_ROOT,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write)
    deadline = time.monotonic() + 60
    while running(state) < 1:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    no_traceback(stderr)
    assert proc.returncode == 130
    assert "start trial-0001" in stderr and "stopping: 1 running trial(s)" in stderr
    assert (
        f"resume with: python training/local_sweep.py {sweep} --state {state} --nowandb" in stderr
    )


# ----- tasks/sweep_wandb.sh without a W&B login ------------------------------------------------


def fake_wandb(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An environment with no W&B login and a `wandb` that only records how it was called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "wandb-calls.txt"
    script = bin_dir / "wandb"
    script.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> {calls}\n'
        'if [[ "$1" == sweep ]]; then echo "wandb: Run sweep agent with: wandb agent me/p/abc123"; fi\n'
    )
    script.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "NETRC"))}
    env.update(HOME=str(home), PATH=f"{bin_dir}:{Path(sys.executable).parent}:{env['PATH']}")
    return env, calls


def sweep_wandb(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "tasks/sweep_wandb.sh", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sweep_wandb_without_login_says_how_to_run_offline(tmp_path: Path) -> None:
    env, calls = fake_wandb(tmp_path)
    done = sweep_wandb(env, "training/sweep_mnist.yaml")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) <= 2 and lines[0].startswith("error: not logged in to W&B")
    assert "api.wandb.ai" in lines[0] and "wandb login" in lines[0]
    assert "bash tasks/sweep_local.sh training/sweep_mnist.yaml --nowandb" in done.stderr
    assert "python training/local_sweep.py training/sweep_mnist.yaml" in done.stderr
    assert not calls.exists()  # wandb was never asked (it would prompt, or fail later)


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_sweep_wandb_with_wandb_turned_off_says_how_to_run_offline(
    tmp_path: Path, mode: str
) -> None:
    env, calls = fake_wandb(tmp_path)
    env.update(WANDB_API_KEY="x" * 40, WANDB_MODE=mode)
    done = sweep_wandb(env)
    assert done.returncode == 2 and f"WANDB_MODE={mode}" in done.stderr
    assert "bash tasks/sweep_local.sh training/sweep_emnist.yaml --nowandb" in done.stderr
    assert not calls.exists()


def test_sweep_wandb_with_a_netrc_login_goes_on(tmp_path: Path) -> None:
    env, calls = fake_wandb(tmp_path)
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {'k' * 40}\n")
    env["NETRC"] = str(netrc)
    done = sweep_wandb(env, str(write_tiny_sweep(tmp_path)), "--count", "1")  # no data needed
    assert done.returncode == 0, done.stderr
    recorded = calls.read_text().splitlines()
    assert recorded[0].startswith("sweep --project text-recognizer")
    assert recorded[-1] == "agent --count 1 me/p/abc123"


# ----- review fixes: run_sweep's save flags, the help, the login check, sample experiments' help --


@pytest.mark.parametrize(
    ("flags", "passed"),
    [
        ([], []),
        (["--save=false"], ["--no-save"]),  # a sweep parameter `save: {value: false}`
        (["--save=False"], ["--no-save"]),  # as the agent formats it
        (["--no-save"], ["--no-save"]),
        (["--no-save=True"], ["--no-save"]),
        (["--no-save=false"], ["--save"]),
        (["--save"], ["--save"]),
        (["--keep-checkpoints"], ["--keep-checkpoints"]),
        (["--keep-checkpoints=false"], ["--no-keep-checkpoints"]),
        (["--no-save", "--keep-checkpoints=True"], ["--no-save", "--keep-checkpoints"]),
    ],
)
def test_run_sweep_passes_the_save_and_checkpoint_choices_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], passed: list[str]
) -> None:
    from text_recognizer.orchestration.trial_args import run_sweep_main
    from text_recognizer.run import cli

    calls: list[list[str]] = []
    monkeypatch.setattr(cli, "run_experiment_main", lambda argv: calls.append(argv) or 0)
    base = tmp_path / "base.json"
    base.write_text(json.dumps(BASE))
    assert run_sweep_main([f"--config={base}", "--gpu=cpu", "--nowandb", *flags]) == 0
    (argv,) = calls
    assert argv[1:] == ["--nowandb", *passed]
    assert json.loads(argv[0]) == BASE  # no flag became a config key


def test_local_sweep_says_which_engine_it_uses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        ls.local_sweep_main(["--help"])
    out = capsys.readouterr().out
    assert "optuna" in out and "sweeps engine" not in out
    assert "sweeps.SweepRun" not in ls.__doc__ and "open-source ``sweeps`` engine" not in ls.__doc__


@pytest.mark.parametrize("where", ["netrc", "settings"])
def test_sweep_wandb_with_an_unreadable_login_file_says_not_logged_in(
    tmp_path: Path, where: str
) -> None:
    """A ~/.netrc or wandb settings file that is not UTF-8 gives no login: one line, no traceback."""
    env, calls = fake_wandb(tmp_path)
    home = Path(env["HOME"])
    if where == "netrc":
        (home / ".netrc").write_bytes(b"machine api.wandb.ai login \xff\xfe password x\n")
    else:
        (home / ".config" / "wandb").mkdir(parents=True)
        (home / ".config" / "wandb" / "settings").write_bytes(b"[default]\napi_key = \xff\n")
    done = sweep_wandb(env, "training/sweep_mnist.yaml")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2 and done.stderr.startswith("error: not logged in to W&B")
    assert not calls.exists()


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_run_sample_experiments_help_prints_usage_and_runs_nothing(
    tmp_path: Path, flag: str
) -> None:
    """--help shows the task's usage and prepare_experiments' help, exit 0; nothing reaches
    GNU parallel (which would run each line of the help as a command)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "parallel-calls.txt"
    parallel = bin_dir / "parallel"
    parallel.write_text(f'#!/usr/bin/env bash\necho "$*" >> {calls}\ncat >> {calls}\n')
    parallel.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "tasks/run_sample_experiments.sh", "--nowandb", flag],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert not calls.exists(), calls.read_text()
    assert done.stdout.startswith("usage: bash tasks/run_sample_experiments.sh")
    assert "usage: prepare_experiments.py" in done.stdout
