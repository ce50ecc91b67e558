"""Experiments and sweeps on a real Slurm: a one-node cluster on this machine.

The cluster is the one ``tasks/slurm_cluster.sh start`` makes (munged, slurmctld and slurmd as
root on 127.0.0.1); the session fixture starts it when ``srun`` does not answer, and the tests
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

import pytest

from conftest import PROJECT_ROOT, TINY_CHARACTER_CONFIG

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


# ----- the real cluster -----------------------------------------------------------------------------
def _srun_answers() -> bool:
    if shutil.which("srun") is None:
        return False
    try:
        done = subprocess.run(
            ["srun", "--quiet", "-N1", "-n1", "-t", "1", "hostname"],
            capture_output=True,
            timeout=20,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A Slurm that answers: the one running, or the one-node cluster started now."""
    if _srun_answers():
        return
    missing = [b for b in ("slurmctld", "slurmd", "srun", "munged") if shutil.which(b) is None]
    if missing:
        pytest.skip(
            f"no Slurm: {', '.join(missing)} not installed (apt-get install slurm-wlm munge)"
        )
    if os.geteuid() != 0:
        pytest.skip("no Slurm answers, and starting the test cluster needs root")
    done = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True)
    if done.returncode != 0 or not _srun_answers():
        pytest.skip(f"the test Slurm cluster did not start: {done.stderr.strip()[-300:]}")


def _prepare(args: list[str], runs: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "TEXT_RECOGNIZER_RUNS_DIR": str(runs)}
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
    done = _prepare(
        [str(SAMPLE), "--slurm", "--nowandb", "--cpus-per-run", "1", "--wait"], runs, timeout=500
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
    assert all(s["node"] and s["cpus_per_task"] == 1 and s["gpus"] == [] for s in slurm)
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
    import yaml

    base = tmp_path / "base.json"
    base.write_text(json.dumps({"experiment_group": "tiny", **TINY_CHARACTER_CONFIG}))
    sweep = {
        "name": "tiny-slurm",
        "program": "training/run_sweep.py",
        "method": "grid",
        "metric": {"name": "val_loss", "goal": "minimize"},
        "parameters": {
            "config": {"value": str(base)},
            "network_args.layer_size": {"values": [8, 16, 32, 64]},
        },
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
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
