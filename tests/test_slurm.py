"""Experiments and sweeps on a real Slurm: a one-node cluster on this machine.

The cluster is the one ``tasks/slurm_cluster.sh start`` makes (munged, slurmctld and slurmd as
root on 127.0.0.1); the session fixture starts it when it is not up (``scontrol ping``, the node's state), and the tests
that need it skip with the reason when it cannot start (not root, slurm-wlm or munge missing).
The placement checks at the top need no cluster: they read a Slurm job's environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import PROJECT_ROOT, TINY_CHARACTER_CONFIG, seed_trial, tiny_sweep, write_tiny_sweep

PREPARE = str(PROJECT_ROOT / "training" / "prepare_experiments.py")
SAMPLE = PROJECT_ROOT / "training" / "experiments" / "sample_synthetic.json"
CLUSTER = PROJECT_ROOT / "tasks" / "slurm_cluster.sh"

SLURM_ENV = {
    "SLURM_JOB_ID": "41",
    "SLURM_ARRAY_JOB_ID": "40",
    "SLURM_ARRAY_TASK_ID": "1",
    "SLURM_JOB_PARTITION": "gpu",
    "SLURMD_NODENAME": "node7",
    "SLURM_STEP_GPUS": "2,3",
    "SLURM_CPUS_PER_TASK": "4",
}


# ----- placement: what a run takes from Slurm's environment (no cluster needed) --------------------
def test_summary_records_the_slurm_job_task_node_and_gpus() -> None:
    from text_recognizer.leasing.slurm_job import record_fields, task_key

    assert record_fields(SLURM_ENV) == {
        "slurm": {
            "job_id": "41",
            "array_job_id": "40",
            "array_task_id": "1",
            "partition": "gpu",
            "node": "node7",
            "gpus": ["2", "3"],
            "cpus_per_task": 4,
        }
    }
    assert task_key(SLURM_ENV) == {"array_job_id": "40", "array_task_id": "1"}
    assert task_key({"SLURM_JOB_ID": "9"}) == {"job_id": "9"}
    assert record_fields({}) == {} and task_key({}) is None  # absent outside Slurm


def test_threads_follow_cpus_per_task_and_no_cpu_lock_is_taken(tmp_path: Path) -> None:
    from text_recognizer.leasing.cpu_share import share_cpu

    env = {**SLURM_ENV, "OMP_NUM_THREADS": "2"}
    share = share_cpu(None, "t", lease_dir=tmp_path / "leases", env=env, cores=16)
    assert (share.threads, share.reason, share.lease) == (4, "Slurm --cpus-per-task=4", None)
    assert not (tmp_path / "leases").exists()
    assert share_cpu(3, "t", lease_dir=tmp_path / "l2", env=env, cores=16).threads == 3


def test_under_slurm_no_gpu_lease_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """--gpu=-1 in a job Slurm gave no GPU is the CPU at once, without the GPUManager (whose
    fake inventory here would otherwise offer a GPU to lease)."""
    from text_recognizer.leasing import devices

    for key in SLURM_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "5")

    def no_manager(*args: object, **kwargs: object) -> None:
        raise AssertionError("the GPUManager was asked under Slurm")

    monkeypatch.setattr(devices, "GPUManager", no_manager)
    assert devices.select_device(-1, run_name="t") == "cpu"
    assert devices.lease_fields() == {}


# ----- review fixes: no cluster needed ---------------------------------------------------------------
def _task(tmp_path: Path, **kwargs: object):
    from text_recognizer.orchestration.slurm_task import SlurmTask

    return SlurmTask(
        command=["run", "CONFIG"],
        resume_base=["run"],
        search_dir=str(tmp_path / "group"),
        runs_root=str(tmp_path),
        cwd=str(tmp_path),
        label="experiments[0]",
        **kwargs,
    )


def _run_folder(group: Path, name: str, slurm: dict, epochs: int = 0) -> Path:
    run = group / name
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"status": "interrupted", "slurm": slurm}))
    rows = [json.dumps({"epoch": e, "loss": 1.0}) for e in range(1, epochs + 1)]
    (run / "metrics.jsonl").write_text("".join(r + "\n" for r in rows))
    return run


def _slurm_env(monkeypatch: pytest.MonkeyPatch, restarts: str) -> None:
    for key, value in {**SLURM_ENV, "SLURM_RESTART_COUNT": restarts}.items():
        monkeypatch.setenv(key, value)


def test_a_task_never_adopts_another_submissions_run_when_job_ids_repeat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 1: an old run with the same array job and task ids (Slurm's counter restarted) is
    not resumed, on the first attempt or after a requeue; the task's own run (its nonce) is."""
    from text_recognizer.leasing.slurm_job import NONCE_ENV, record_fields
    from text_recognizer.orchestration.slurm import array_runs

    group = tmp_path / "group"
    same_ids = {"job_id": "41", "array_job_id": "40", "array_task_id": "1"}
    old = _run_folder(group, "2020-old", {**same_ids, "nonce": "someone-elses"})
    _run_folder(group, "2019-older", dict(same_ids))  # before nonces: ids only
    task = _task(tmp_path)
    assert len(task.nonce) == 32 and task.nonce != _task(tmp_path).nonce
    for restarts in ("0", "1"):
        _slurm_env(monkeypatch, restarts)
        assert task.argv() == ["run", "CONFIG"], f"restart {restarts} adopted {old}"
    own = _run_folder(group, "2021-own", {**same_ids, "nonce": task.nonce})
    _slurm_env(monkeypatch, "0")
    assert task.argv() == ["run", "CONFIG"]  # the first attempt never searches
    _slurm_env(monkeypatch, "1")
    assert task.argv() == ["run", "--resume", str(own)]
    # The run records the nonce it is given, and --wait's table takes only this array's runs.
    assert task._env()[NONCE_ENV] == task.nonce
    assert record_fields({**SLURM_ENV, NONCE_ENV: "n1"})["slurm"]["nonce"] == "n1"
    assert array_runs(group, {task.nonce}) == [own]


def _parse(argv: list[str]):
    import argparse

    from text_recognizer.orchestration.slurm import add_slurm_arguments, options_from_args

    parser = argparse.ArgumentParser()
    add_slurm_arguments(parser)
    return options_from_args(parser.parse_args(argv))


def test_a_time_limit_too_short_to_checkpoint_is_refused() -> None:
    """Defect 2: --time 1 got Slurm's warning at once and requeued without end."""
    from text_recognizer.errors import UserError
    from text_recognizer.orchestration.slurm import MIN_TIME_MIN, SIGNAL_BEFORE_S

    assert MIN_TIME_MIN * 60 >= 2 * SIGNAL_BEFORE_S
    with pytest.raises(UserError, match=f"--time must be {MIN_TIME_MIN} to 525600 minutes"):
        _parse(["--slurm", "--time", "1"])
    assert _parse(["--slurm", "--time", str(MIN_TIME_MIN)]).time_min == MIN_TIME_MIN


def _checkpoint(task, monkeypatch: pytest.MonkeyPatch, code: int | None):
    monkeypatch.setattr(type(task), "_stop_run", lambda self: code)
    return task.checkpoint()


def test_checkpoint_requeues_only_an_attempt_that_finished_an_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No requeue when this attempt ran into its time limit without logging a new epoch, nor after
    MAX_REQUEUES; the task fails with the run's code (130) instead of coming back forever. A
    preempted attempt (far from its limit) is requeued whatever it finished."""
    from submitit.helpers import DelayedSubmission

    from text_recognizer.errors import SlurmTaskFailed
    from text_recognizer.orchestration.slurm_task import MAX_REQUEUES

    task = _task(tmp_path)
    run = _run_folder(tmp_path / "group", "2021-run", {"nonce": task.nonce}, epochs=2)
    _slurm_env(monkeypatch, "1")
    task._start_epoch = 2  # the attempt resumed after epoch 2 and got no further
    with pytest.raises(SlurmTaskFailed, match="no new epoch") as failed:
        _checkpoint(task, monkeypatch, 130)
    assert failed.value.exit_code == 130
    from text_recognizer.orchestration import slurm_task

    with monkeypatch.context() as preempted:  # far from its time limit: preempted, requeued
        preempted.setattr(slurm_task, "near_time_limit", lambda job_id: False)
        requeued = _checkpoint(task, monkeypatch, 130)
        assert isinstance(requeued, DelayedSubmission)
    task._start_epoch = 1  # it finished epoch 2: requeued, bound to its run folder
    again = _checkpoint(task, monkeypatch, 130)
    assert isinstance(again, DelayedSubmission) and again.function.run_dir == str(run)
    _slurm_env(monkeypatch, str(MAX_REQUEUES))
    with pytest.raises(SlurmTaskFailed, match=f"restarted {MAX_REQUEUES} times"):
        _checkpoint(task, monkeypatch, 130)
    from text_recognizer.orchestration import slurm

    assert slurm.executor(tmp_path, slurm.SlurmOptions(), "x").max_num_timeout == MAX_REQUEUES


def test_checkpoint_keeps_the_runs_exit_code_and_counts_a_signal_death_as_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Minor (b): a run that failed (exit 2) as USR2 arrived is that failure, not submitit's "Job
    not requeued"; a sweep trial reads 2 back. Minor (f): killed by the signal before its handler
    was installed (exit -12) is interrupted, so it is requeued like one that caught it."""
    from submitit.helpers import DelayedSubmission

    from text_recognizer.errors import SlurmTaskFailed
    from text_recognizer.orchestration.slurm_task import exit_code
    from text_recognizer.orchestration.slurm_trials import _EXIT

    task = _task(tmp_path)
    _run_folder(tmp_path / "group", "2021-run", {"nonce": task.nonce}, epochs=1)
    _slurm_env(monkeypatch, "0")
    with pytest.raises(SlurmTaskFailed) as failed:
        _checkpoint(task, monkeypatch, 2)
    assert failed.value.exit_code == 2
    assert _EXIT.findall(f"SlurmTaskFailed: {failed.value}") == ["2"]
    assert exit_code(-12) == exit_code(-15) == 130 and exit_code(-9) == -9
    assert isinstance(_checkpoint(task, monkeypatch, -12), DelayedSubmission)


def test_an_inherited_cuda_visible_devices_is_no_slurm_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 4 (and the CI failure of the sample-array test: gpus ["0"]): sbatch exports the
    login shell's CUDA_VISIBLE_DEVICES; only Slurm's own variables say which GPUs it gave."""
    from text_recognizer.leasing.slurm_job import record_fields, slurm_gpus

    base = {"SLURM_JOB_ID": "5", "CUDA_VISIBLE_DEVICES": "0"}
    assert slurm_gpus(base) == [] and record_fields(base)["slurm"]["gpus"] == []
    assert slurm_gpus({**base, "SLURM_JOB_GPUS": "3"}) == ["3"]
    assert slurm_gpus({**base, "SLURM_GPUS_ON_NODE": "1"}) == ["0"]
    assert slurm_gpus({"SLURM_JOB_ID": "5", "SLURM_GPUS_ON_NODE": "2"}) == ["0", "1"]
    for key in SLURM_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("SLURM_GPUS_ON_NODE", raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "5")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert "CUDA_VISIBLE_DEVICES" not in _task(tmp_path)._env()  # the run sees no GPU
    monkeypatch.setenv("SLURM_JOB_GPUS", "0")
    assert _task(tmp_path)._env()["CUDA_VISIBLE_DEVICES"] == "0"


@pytest.mark.parametrize(
    ("script", "flag"),
    [
        ("prepare_experiments.py", ["--gpus-per-run", "1"]),
        ("prepare_experiments.py", ["--time", "60"]),
        ("local_sweep.py", ["--cpus-per-run", "2"]),
    ],
)
def test_slurm_flags_without_slurm_are_refused(script: str, flag: list[str]) -> None:
    """Minor (a): they were ignored in silence."""
    target = str(SAMPLE) if script.startswith("prepare") else "training/sweep_mnist.yaml"
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "training" / script), target, *flag],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: {flag[0]} needs --slurm"]


def test_stops_are_checked_retried_and_rate_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    """Minor (c): scancel's failure is retried then reported; stop_leftover does not take a failed
    squeue for "nothing left"; _stop_all kills again every KILL_AGAIN_S, not every 0.05 s."""
    import types

    from text_recognizer.errors import SlurmError
    from text_recognizer.orchestration import scheduler, slurm, slurm_trials

    calls: list[list[str]] = []

    def failing(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 1, "", "scancel: error: Socket timed out")

    monkeypatch.setattr(slurm.subprocess, "run", failing)
    monkeypatch.setattr(slurm.time, "sleep", lambda s: None)
    assert "Socket timed out" in slurm.scancel(["7"])
    assert len(calls) == 3
    launcher = slurm_trials.SlurmTrialLauncher(slurm.SlurmOptions(), Path("/tmp/x"))
    with pytest.raises(SlurmError, match="cannot list trial-1's leftover Slurm jobs"):
        launcher.stop_leftover("trial-1")

    kills = []
    proc = types.SimpleNamespace(send_signal=lambda s: None, kill=lambda: kills.append(1))
    sweep = types.SimpleNamespace(
        active={"t": types.SimpleNamespace(proc=proc)}, term_grace_s=0.0, force=False
    )
    sweep.say = lambda line: None
    ends = time.monotonic() + 1.0
    sweep._reap = lambda: sweep.active.clear() if time.monotonic() > ends else None
    scheduler.LocalSweep._stop_all(sweep)
    assert len(kills) == 1  # was about 20 scancels in that second


def test_wait_fails_on_a_job_that_can_never_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Minor (d): --cpus-per-run 64 on a 2-CPU node pends (PartitionConfig) for ever."""
    from text_recognizer.errors import SlurmError
    from text_recognizer.orchestration import slurm

    seen: list[list[str]] = []

    def fake(argv, **kwargs):
        seen.append(argv)
        if (
            argv[0] == "squeue"
        ):  # pending for ever; "gone" after 20 polls so no hang without the fix
            out = "12_0|PENDING|PartitionConfig\n" if len(seen) < 20 else ""
            return subprocess.CompletedProcess(argv, 0, out, "")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(slurm.subprocess, "run", fake)
    monkeypatch.setattr(slurm.time, "sleep", lambda s: None)
    with pytest.raises(SlurmError, match=r"12_0 can never start: pending \(PartitionConfig\)"):
        slurm.wait_for("12")
    assert ["scancel", "12"] in seen
    assert not slurm.never_runs("Resources") and not slurm.never_runs("Priority")


def test_mem_takes_what_slurm_takes() -> None:
    """Minor (e): 4g and 0 (all of the node's memory) were refused."""
    from text_recognizer.errors import UserError

    for mem in ("4g", "4G", "500M", "0", "1024"):
        assert _parse(["--slurm", "--mem", mem]).mem == mem
    for mem in ("4 G", "-1", "01G", "4GB"):
        with pytest.raises(UserError):
            _parse(["--slurm", "--mem", mem])


# ----- the real cluster -----------------------------------------------------------------------------
UP_STATES = {"idle", "mix", "alloc", "comp"}


def _cluster_up() -> bool:
    """The check tasks/slurm_cluster.sh makes: slurmctld answers ``scontrol ping`` and the node
    takes jobs (idle, mix or alloc). Not an srun probe: that needs a free CPU, so a node busy with
    other jobs (CI's own) would look down."""
    if shutil.which("scontrol") is None or shutil.which("sinfo") is None:
        return False
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
        state = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=15
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    first = state.stdout.split()[0] if state.stdout.split() else ""
    return ping.returncode == 0 and "UP" in ping.stdout and first in UP_STATES


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A Slurm that is up: the one running (busy or not), or the one-node cluster started now."""
    if _cluster_up():
        return
    missing = [b for b in ("slurmctld", "slurmd", "srun", "munged") if shutil.which(b) is None]
    if missing:
        pytest.skip(
            f"no Slurm: {', '.join(missing)} not installed (apt-get install slurm-wlm munge)"
        )
    if os.geteuid() != 0:
        pytest.skip("no Slurm is up, and starting the test cluster needs root")
    done = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True)
    if done.returncode != 0 or not _cluster_up():
        pytest.skip(f"the test Slurm cluster did not start: {done.stderr.strip()[-300:]}")


def _prepare(
    args: list[str], runs: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env or {}), "TEXT_RECOGNIZER_RUNS_DIR": str(runs)}
    return subprocess.run(
        [sys.executable, PREPARE, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=timeout,
    )


def _summaries(group_dir: Path) -> list[dict]:
    return [
        json.loads(p.read_text())
        for p in sorted(group_dir.glob("*/summary.json"))
        if p.parent.name != "slurm"
    ]


def _epochs(run_dir: Path) -> list[int]:
    return [
        json.loads(line)["epoch"]
        for line in (run_dir / "metrics.jsonl").read_text().splitlines()
        if line.strip()
    ]


def _wait_gone(job_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-r", "-j", job_id], capture_output=True, text=True)
        if not out.stdout.strip():
            return
        time.sleep(1)
    subprocess.run(["scancel", job_id], check=False)
    pytest.fail(f"Slurm job {job_id} still queued after {timeout:.0f}s")


def _mid_run(group: Path, epochs: int, timeout: float) -> Path:
    """The run folder once the run has logged an epoch and has more than one still to go."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [d for d in group.glob("2*") if (d / "metrics.jsonl").is_file()]
        if found and 1 <= len(_epochs(found[0])) < epochs - 1:
            return found[0]
        time.sleep(0.3)
    pytest.fail("the run did not get to its first epoch")


def _file(tmp_path: Path, experiments: list[dict], group: str) -> Path:
    path = tmp_path / "experiments.json"
    path.write_text(json.dumps({"experiment_group": group, "experiments": experiments}))
    return path


@pytest.mark.timeout(600)
def test_sample_experiments_as_one_array_all_finished_with_their_slurm_ids(
    slurm_cluster: None, tmp_path: Path
) -> None:
    assert SAMPLE.is_file()
    runs = tmp_path / "runs"
    done = _prepare(  # a login shell's CUDA_VISIBLE_DEVICES (sbatch exports it) is no Slurm GPU
        [str(SAMPLE), "--slurm", "--nowandb", "--cpus-per-run", "1", "--wait"],
        runs,
        timeout=500,
        env={"CUDA_VISIBLE_DEVICES": "0"},
    )
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[0]
    assert "Slurm job array" in done.stderr and f"squeue -j {job_id}" in done.stderr
    group = runs / "sample-synthetic-experiments"
    summaries = _summaries(group)
    assert [s["status"] for s in summaries] == ["finished"] * 3
    slurm = [s["slurm"] for s in summaries]
    assert {s["array_job_id"] for s in slurm} == {job_id}
    assert sorted(s["array_task_id"] for s in slurm) == ["0", "1", "2"]
    for s in slurm:  # each field on its own, so a failure names the one that is wrong
        fields = {k: s.get(k) for k in ("node", "cpus_per_task", "gpus")}
        assert s.get("node"), f"no node recorded: {fields}"
        assert s.get("cpus_per_task") == 1, f"cpus_per_task is not 1: {fields}"
        assert s.get("gpus") == [], f"gpus is not [] (an inherited CUDA_VISIBLE_DEVICES?): {fields}"
    assert all(s["num_threads"] == 1 and s["device"] == "cpu" for s in summaries)
    assert "gpu_uuid" not in summaries[0]  # no lease under Slurm
    # Slurm's logs beside the run records, and the compare_runs table of the three runs.
    assert len(list((group / "slurm").glob(f"{job_id}_*/*_log.out"))) == 3
    table = done.stdout.splitlines()
    assert sum("finished" in line for line in table) == 3


@pytest.mark.timeout(600)
def test_a_bad_experiment_fails_alone(slurm_cluster: None, tmp_path: Path) -> None:
    """An ImageTextDataset over an empty folder passes the config check but is bad input when
    the run reads it (exit 2): that task fails, is not requeued, and the other run finishes."""
    empty = tmp_path / "no-lines"
    empty.mkdir()
    bad = {
        "dataset": "ImageTextDataset",
        "dataset_args": {"data_dir": str(empty)},
        "model": "LineModelCtc",
        "network": "line_lstm_ctc",
    }
    path = _file(tmp_path, [TINY_CHARACTER_CONFIG, bad], "bad one")
    runs = tmp_path / "runs"
    done = _prepare([str(path), "--slurm", "--nowandb", "--wait"], runs, timeout=500)
    assert done.returncode == 1, done.stderr  # GNU parallel's convention: one failed
    assert "experiments[1]" in done.stderr and "exited with 2" in done.stderr
    summaries = _summaries(runs / "bad-one")
    assert [s["status"] for s in summaries] == ["finished"]  # the bad one left no folder
    log = next((runs / "bad-one" / "slurm").glob("*_1/*_log.out")).read_text()
    assert "error:" in log and "requeued" not in log


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("signal_name", ["TERM", "USR2"])
def test_a_signalled_task_is_requeued_and_resumes_without_repeating_an_epoch(
    slurm_cluster: None, tmp_path: Path, signal_name: str
) -> None:
    """TERM: ``scancel --signal=TERM`` (the task requeues its job: ``scontrol requeue``); USR2:
    Slurm's warning before the time limit or a preemption (``--signal=USR2@90``, what submitit's
    own ``_interrupt`` sends: submitit calls the task's checkpoint and requeues)."""
    epochs = 5
    config = {
        **TINY_CHARACTER_CONFIG,
        "dataset_args": {"num_train": 20000, "num_test": 200, "charset": "digits"},
        "network_args": {"num_layers": 2, "layer_size": 256},
        "train_args": {"batch_size": 32, "epochs": epochs},
    }
    path = _file(tmp_path, [config], "requeue")
    runs = tmp_path / "runs"
    done = _prepare([str(path), "--slurm", "--nowandb"], runs)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[0]
    group = runs / "requeue"
    try:
        run_dir = _mid_run(group, epochs, timeout=300)
        subprocess.run(["scancel", f"--signal={signal_name}", job_id], check=True)
        _wait_gone(job_id, timeout=600)
    finally:
        subprocess.run(["scancel", job_id], check=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["resumes"] == 1 and summary["resumed_from_epoch"] >= 1
    assert summary["slurm"]["job_id"] == job_id and summary["slurm"]["restart_count"] == "1"
    assert _epochs(run_dir) == list(range(1, epochs + 1))  # as uninterrupted: none twice
    assert len(list(group.glob("2*"))) == 1  # the same run folder, not a new run


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_four_trial_sweep_runs_as_slurm_jobs_two_at_a_time(
    slurm_cluster: None, tmp_path: Path
) -> None:
    path = write_tiny_sweep(tmp_path, "tiny-slurm")
    state_dir = tmp_path / "state" / "tiny-slurm"
    args = ["--state", str(state_dir), "--jobs", "2", "--nowandb", "--slurm", "--cpus-per-run", "1"]
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "training" / "local_sweep.py"), str(path), *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=800,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "as Slurm jobs" in done.stdout + done.stderr
    state = json.loads((state_dir / "state.json").read_text())
    trials = state["trials"]
    assert [t["status"] for t in trials] == ["finished"] * 4
    job_ids = set()
    for trial in trials:
        summary = json.loads((state_dir / trial["id"] / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["slurm"]["cpus_per_task"] == 1
        job_ids.add(summary["slurm"]["job_id"])
        assert "submitted as Slurm job" in (state_dir / "logs" / f"{trial['id']}.log").read_text()
    assert len(job_ids) == 4  # one Slurm job per trial
    assert "best:" in done.stdout  # the leaderboard, as a local sweep ends
    # Two at a time: never more than two trials' [start, end] spans overlap.
    spans = [(t["started_at"], t["ended_at"]) for t in trials]
    for start, _ in spans:
        assert sum(s <= start < e for s, e in spans) <= 2


def test_a_partition_slurm_refuses_is_one_line_and_leaves_nothing(
    slurm_cluster: None, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    done = _prepare([str(SAMPLE), "--slurm", "--partition", "no-such-partition"], runs)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: Slurm refused the job array: sbatch: error: Batch job submission failed: "
        "Invalid partition name specified"
    ]
    assert not (runs / "sample-synthetic-experiments").exists()


@pytest.mark.timeout(300)
def test_a_busy_cluster_is_up_and_its_config_is_not_rewritten(slurm_cluster: None) -> None:
    """Defect 3: with every CPU of the node taken, the srun probe timed out, so ``status`` said
    down and ``start`` rewrote slurm.conf under the running daemons."""
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout
    sbatch = ["sbatch", "--parsable", "-c", cpus.split()[0], "-t", "5", "-o", "/dev/null"]
    submitted = subprocess.run(
        [*sbatch, "--wrap", "sleep 240"],
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf"))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = subprocess.run(
                ["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True
            )
            if state.stdout.strip() == "RUNNING":
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"job {job_id} did not start")
        before = conf.stat().st_mtime_ns if conf.is_file() else None
        status = subprocess.run(["bash", str(CLUSTER), "status"], capture_output=True, text=True)
        assert status.returncode == 0 and "up" in status.stdout, status.stdout + status.stderr
        assert _cluster_up()
        start = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True)
        assert start.returncode == 0, start.stderr
        assert (conf.stat().st_mtime_ns if conf.is_file() else None) == before
    finally:
        subprocess.run(["scancel", job_id], check=False)


def test_hyperband_stops_running_slurm_trials_with_scancel_term(
    slurm_cluster: None, tmp_path: Path
) -> None:
    """The sweep's hyperband stop reaches a trial that is a Slurm job: with the metrics of
    tests/test_sweeps.py's hyperband case, the two laggards (here real Slurm jobs, each a
    `sleep 300`) are sent `scancel --signal=TERM` and leave the queue within seconds, ended by
    it; the trial hyperband keeps is not touched."""
    import signal as signals

    import submitit

    from text_recognizer.orchestration.scheduler import LocalSweep, _Active
    from text_recognizer.orchestration.slurm import SlurmOptions, executor
    from text_recognizer.orchestration.slurm_task import job_state
    from text_recognizer.orchestration.slurm_trials import SlurmTrialProcess

    sweep = tiny_sweep(
        tmp_path,
        "hb-slurm",
        {"train_args.seed": {"values": [1, 2]}},
        early_terminate={"type": "hyperband", "min_iter": 2, "eta": 3},
    )
    state_dir = tmp_path / "hb"
    runner = LocalSweep(sweep, "sweep.yaml", state_dir, jobs=4, out=open(os.devnull, "w"))  # noqa: SIM115
    histories = {  # band 2 values 0.4 0.5 0.7 0.9: only 0.4 and 0.5 pass (eta 3)
        "trial-0001": ([1.0, 0.5], 10, "running"),  # the best running one: goes on
        "trial-0002": ([1.0, 0.7], 10, "running"),  # behind: stopped (a Slurm job)
        "trial-0003": ([1.0, 0.9, 0.8], 10, "running"),  # behind: stopped (a Slurm job)
        "trial-0006": ([1.0, 0.4, 0.3], 3, "finished"),
    }
    ex = executor(tmp_path / "submitit", SlurmOptions(cpus_per_run=1), "hb-slurm-test")
    jobs: dict[str, SlurmTrialProcess] = {}
    local = subprocess.Popen(["sleep", "300"])
    try:
        for i, (history, epochs, status) in histories.items():
            trial = seed_trial(runner, state_dir, i, history, epochs, status)
            if status != "running":
                continue
            if i == "trial-0001":
                proc: Any = local
            else:
                proc = jobs[i] = SlurmTrialProcess(
                    ex.submit(submitit.helpers.CommandFunction(["sleep", "300"]))
                )
            runner.active[i] = _Active(trial, proc, open(os.devnull, "w"), time.monotonic())  # noqa: SIM115
        deadline = time.monotonic() + 120
        while any(job_state(j.job_id) != "RUNNING" for j in jobs.values()):
            assert time.monotonic() < deadline, "the two sleep jobs did not start"
            time.sleep(1)
        runner._early_terminate()
        stopped = {i for i, t in runner.active.items() if t.trial.stop_requested}
        assert stopped == {"trial-0002", "trial-0003"}
        started = time.monotonic()
        codes = {}
        while len(codes) < 2:
            assert time.monotonic() - started < 60, f"still queued after TERM: {codes}"
            for i, job in jobs.items():
                code = job.poll()
                if code is not None:
                    codes[i] = code
            time.sleep(0.5)
        # ended by the signal (a `sleep 300` that ran its course would hold them 5 minutes), not
        # successfully; a real trial's SlurmTask reads the TERM back as 130 (the requeue tests)
        assert set(codes) == {"trial-0002", "trial-0003"} and 0 not in codes.values()
        assert local.poll() is None  # the trial hyperband keeps runs on
    finally:
        local.send_signal(signals.SIGKILL)
        local.wait()
        for job in jobs.values():
            subprocess.run(["scancel", job.job_id], check=False)


def test_slurm_durations_are_read_as_slurm_writes_them() -> None:
    from text_recognizer.orchestration.slurm_task import slurm_seconds

    assert slurm_seconds("5") == 300  # minutes alone
    assert slurm_seconds("1:30") == 90
    assert slurm_seconds("2:00:05") == 7205
    assert slurm_seconds("1-00:00:00") == 86400
    assert slurm_seconds("UNLIMITED") is None and slurm_seconds("INVALID") is None
