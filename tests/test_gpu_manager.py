"""GPU leases without GPUs: a fake inventory, real file locks, real processes (and kill -9)."""

from __future__ import annotations

import errno
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT, run_script
from text_recognizer import errors
from text_recognizer.errors import GpuWaitTimeout, LeaseFolderError, UserError
from text_recognizer.leasing import cpu_share, lease_folder
from text_recognizer.leasing.cpu_share import parse_parallel_jobs
from text_recognizer.leasing.gpu_inventory import (
    ENV_FAKE_GPUS,
    FakeInventory,
    GpuInfo,
    NvmlInventory,
    filter_visible,
    rank_gpus,
)
from text_recognizer.leasing.lease_folder import ENV_LEASES, LeaseFolder
from text_recognizer.leasing.leases import ENV_LEASE_INFO, inherited_lease
from text_recognizer.leasing.manager import ENV_MAX_MEMORY, ENV_SLOTS, ENV_TIMEOUT, GPUManager

GPU_A = GpuInfo(0, "GPU-aaaa-0000", 1000, 16000, 5, "fake")
GPU_B = GpuInfo(1, "GPU-bbbb-1111", 200, 16000, 2, "fake")
GPU_C = GpuInfo(2, "GPU-cccc-2222", 12000, 16000, 0, "fake")  # 75% memory used


def manager(tmp_path: Path, gpus, env: dict | None = None, **kwargs) -> GPUManager:
    """A manager on a fake inventory, a private lease folder and a private environment."""
    kwargs.setdefault("poll_interval", 0.02)
    kwargs.setdefault("stream", io.StringIO())
    return GPUManager(FakeInventory(gpus), tmp_path / "leases", env=dict(env or {}), **kwargs)


def write_fake(path: Path, gpus: list[GpuInfo] | None = None, **extra) -> Path:
    items = [g.__dict__ for g in (gpus or [])]
    path.write_text(json.dumps({"gpus": items, **extra}))
    return path


def fake_env(tmp_path: Path, gpus: list[GpuInfo], **extra: str) -> dict[str, str]:
    """Environment for a subprocess that sees the fake GPUs and the test's lease folder."""
    env = {
        ENV_FAKE_GPUS: str(write_fake(tmp_path / "gpus.json", gpus)),
        ENV_LEASES: str(tmp_path / "leases"),
        **extra,
    }
    return env


# ----- selection logic ---------------------------------------------------------------------------


def test_rank_prefers_least_loaded_and_applies_thresholds():
    ranked = rank_gpus([GPU_A, GPU_B, GPU_C], {}, 1, 50, 50)
    assert [g.index for g in ranked] == [1, 0]  # C is over the memory threshold
    busy = GpuInfo(3, "GPU-dddd", 0, 16000, 90, "fake")
    assert busy not in rank_gpus([busy], {}, 1, 50, 50)
    assert busy in rank_gpus([busy], {}, 1, 50, 95)
    assert GPU_C in rank_gpus([GPU_C], {}, 1, 80, 50)


def test_rank_slots_and_utilization_of_our_own_runs():
    busy = GpuInfo(0, "GPU-x", 100, 16000, 99, "fake")  # 99% busy: with our own run on it
    assert rank_gpus([busy], {"GPU-x": 1}, 1, 50, 50) == []  # one slot, taken
    assert rank_gpus([busy], {"GPU-x": 1}, 2, 50, 50) == [busy]  # 2nd slot: our load is ok
    assert rank_gpus([busy], {"GPU-x": 2}, 2, 50, 50) == []
    # A GPU holding fewer of our runs comes first, whatever its memory.
    ranked = rank_gpus([GPU_A, GPU_B], {"GPU-bbbb-1111": 1}, 2, 50, 50)
    assert [g.index for g in ranked] == [0, 1]


def test_filter_visible_follows_cuda_visible_devices():
    gpus = [GPU_A, GPU_B, GPU_C]
    assert filter_visible(gpus, None) == gpus
    assert filter_visible(gpus, "") == []
    assert filter_visible(gpus, "2,0") == [GPU_C, GPU_A]
    assert filter_visible(gpus, "GPU-bbbb-1111,GPU-aaaa") == [GPU_B, GPU_A]  # UUIDs, prefixes
    assert filter_visible(gpus, "cccc") == [GPU_C]  # a UUID prefix without "GPU-"
    assert filter_visible(gpus, "1,7,0") == [GPU_B]  # like CUDA: stop at the first unknown
    assert filter_visible(gpus, "-1") == []


def test_acquire_sets_cuda_env_and_takes_least_loaded(tmp_path):
    m = manager(tmp_path, [GPU_A, GPU_B, GPU_C])
    first = m.acquire("one")
    assert first is not None and first.gpu == GPU_B
    assert m.env["CUDA_VISIBLE_DEVICES"] == GPU_B.uuid
    assert m.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    second = manager(tmp_path, [GPU_A, GPU_B, GPU_C]).acquire("two")
    assert second is not None and second.gpu == GPU_A
    assert manager(tmp_path, [GPU_A, GPU_B, GPU_C]).try_acquire("three") is None  # C too full
    holder = json.loads(first.path.read_text())
    assert holder["pid"] == os.getpid() and holder["run"] == "one" and holder["since"]
    first.release()
    assert first.path.read_text() == ""  # holder details cleared on release
    third = manager(tmp_path, [GPU_A, GPU_B, GPU_C]).try_acquire("three")
    assert third is not None and third.gpu == GPU_B
    second.release()
    third.release()


def test_slots_per_gpu(tmp_path):
    m = manager(tmp_path, [GPU_A], slots_per_gpu=2)
    leases = [m.try_acquire(f"run{i}") for i in range(3)]
    assert [lease.slot if lease else None for lease in leases] == [0, 1, None]
    assert all(lease.gpu == GPU_A for lease in leases[:2])
    for lease in leases[:2]:
        lease.release()


def test_respects_cuda_visible_devices_the_user_set(tmp_path):
    # GPU B is the least loaded, but the user allowed only A (by index) or C, A (by UUID).
    m = manager(tmp_path, [GPU_A, GPU_B], env={"CUDA_VISIBLE_DEVICES": "0"})
    lease = m.acquire("restricted")
    assert lease is not None and lease.gpu == GPU_A
    assert m.env["CUDA_VISIBLE_DEVICES"] == GPU_A.uuid
    assert (
        manager(tmp_path, [GPU_A, GPU_B], env={"CUDA_VISIBLE_DEVICES": "0"}).try_acquire() is None
    )
    lease.release()
    m2 = manager(tmp_path, [GPU_A, GPU_B, GPU_C], env={"CUDA_VISIBLE_DEVICES": "GPU-cccc,GPU-aaaa"})
    assert [g.index for g in m2.visible_gpus()] == [2, 0]  # the user's order: UUIDs, not indices


def test_no_driver_is_one_notice_and_the_cpu(tmp_path):
    m = manager(tmp_path, [])
    m.inventory = FakeInventory(write_fake(tmp_path / "none.json", driver=False))
    assert m.acquire("x") is None
    out = m.stream.getvalue()
    assert out.count("no GPU available") == 1 and "CPU" in out
    hidden = manager(tmp_path, [GPU_A], env={"CUDA_VISIBLE_DEVICES": ""})
    assert hidden.acquire("x") is None
    assert "names no GPU" in hidden.stream.getvalue()


def test_nvml_without_driver_raises_no_gpu_driver():
    pytest.importorskip("pynvml")
    try:
        gpus = NvmlInventory().gpus()
    except errors.NoGpuDriver as e:
        assert "NVML" in str(e) or "pynvml" in str(e)
    else:  # a machine with a driver: the real inventory in nvidia-smi order
        assert [g.index for g in gpus] == list(range(len(gpus)))
        assert all(g.uuid.startswith(("GPU-", "MIG-")) for g in gpus)


# ----- waiting -----------------------------------------------------------------------------------


def test_wait_message_then_timeout(tmp_path):
    holder = manager(tmp_path, [GPU_A]).acquire("the holder")
    m = manager(tmp_path, [GPU_A], notice_every=0.1)
    started = time.monotonic()
    with pytest.raises(GpuWaitTimeout) as err:
        m.acquire("waiter", timeout=0.35)
    assert 0.3 <= time.monotonic() - started < 3
    message = str(err.value)
    assert "\n" not in message and "within 0.35s" in message and "'the holder'" in message
    assert isinstance(err.value, UserError) and err.value.exit_code == 2
    lines = m.stream.getvalue().splitlines()
    assert lines[0].startswith("waiting for a GPU: GPU 0 leased by pid")
    assert "timeout 0.35s" in lines[0] and "status" in lines[0]
    assert sum(line.startswith("waiting") for line in lines) == 1
    assert 1 <= sum(line.startswith("still waiting") for line in lines) <= 4  # periodic, not spam
    holder.release()


def test_wait_ends_when_a_slot_frees(tmp_path):
    holder = manager(tmp_path, [GPU_A]).acquire("the holder")
    threading.Timer(0.3, holder.release).start()
    m = manager(tmp_path, [GPU_A])
    lease = m.acquire("waiter", timeout=10)
    assert lease is not None and lease.gpu == GPU_A
    assert "after waiting" in m.stream.getvalue()
    lease.release()


def test_timeout_from_the_environment_and_bad_values(tmp_path):
    env = {ENV_TIMEOUT: "0.1"}
    holder = manager(tmp_path, [GPU_A]).acquire("h")
    with pytest.raises(GpuWaitTimeout):
        manager(tmp_path, [GPU_A], env=env).acquire("w")
    holder.release()
    with pytest.raises(UserError, match="TEXT_RECOGNIZER_GPU_MAX_MEMORY must be a number"):
        manager(tmp_path, [GPU_A], env={ENV_MAX_MEMORY: "lots"})


def test_cli_run_waits_then_times_out_with_one_line(tmp_path):
    env = fake_env(tmp_path, [GPU_A])
    holder = subprocess.Popen(
        [sys.executable, "-m", "text_recognizer.leasing.gpu_manager", "run", "--run-name",
         "long run", "--", sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "up"  # the command runs holding the lease
        out = run_script(
            "-m", "text_recognizer.leasing.gpu_manager", "run", "--timeout", "0.5",
            "--poll-interval", "0.05", "--", "true", env=env,
        )  # fmt: skip
        assert out.returncode == 2
        assert out.stderr.splitlines()[0].startswith("waiting for a GPU: GPU 0 leased by pid")
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("error: no GPU became free within 0.5s") and "'long run'" in last
        assert "Traceback" not in out.stderr
    finally:
        holder.kill()
        holder.wait()
    # kill -9 freed it: the next one gets the GPU at once and its command sees CUDA_VISIBLE_DEVICES.
    out = run_script(
        "-m", "text_recognizer.leasing.gpu_manager", "run", "--timeout", "5", "--",
        "sh", "-c", 'echo "$CUDA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER"', env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{GPU_A.uuid} PCI_BUS_ID"


# ----- many processes racing -------------------------------------------------------------------

RACER = r"""
import json, os, sys, time
from text_recognizer.leasing.manager import GPUManager

log, hold = sys.argv[1], float(sys.argv[2])
lease = GPUManager(poll_interval=0.01).acquire(f"racer {os.getpid()}", timeout=60)
start = time.monotonic()

def note(**fields):
    line = json.dumps({"pid": os.getpid(), "slot": lease.name, "start": start, **fields})
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (line + "\n").encode())  # one write per line: lines never interleave
    os.close(fd)

if hold < 0:  # the victim: announce, then hold until killed
    note(victim=True)
    time.sleep(600)
time.sleep(hold)
note(end=time.monotonic())
lease.release()
"""


def test_stress_many_processes_few_slots_and_kill_9(tmp_path):
    """12 racers for 3 slots (one held by a victim until kill -9): every slot's tenures are
    disjoint, every racer runs, and the victim's slot is leased again after the kill."""
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    log = tmp_path / "tenures.jsonl"
    env = {**os.environ, **fake_env(tmp_path, [GPU_A], **{ENV_SLOTS: "3"})}

    def spawn(hold: float) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), str(log), str(hold)], env=env)

    def lines() -> list[dict]:
        return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []

    def wait_for(predicate, what: str, limit: float = 30) -> None:
        deadline = time.monotonic() + limit
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {lines()}"
            time.sleep(0.02)

    victim = spawn(-1)
    wait_for(lambda: any(x.get("victim") for x in lines()), "the victim's lease")
    racers = [spawn(0.12) for _ in range(12)]
    try:
        wait_for(lambda: sum("end" in x for x in lines()) >= 3, "three racers")
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        codes = [p.wait(timeout=60) for p in racers]
    finally:
        for p in [victim, *racers]:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert codes == [0] * 12
    records = lines()
    victim_line = next(x for x in records if x.get("victim"))
    tenures = [x for x in records if "end" in x]
    assert len(tenures) == 12 and len({x["pid"] for x in tenures}) == 12  # everyone ran once
    tenures.append({**victim_line, "end": killed_at})
    by_slot: dict[str, list[dict]] = {}
    for t in tenures:
        by_slot.setdefault(t["slot"], []).append(t)
    assert len(by_slot) == 3
    for slot, held in by_slot.items():
        held.sort(key=lambda t: t["start"])
        for before, after in itertools.pairwise(held):
            assert after["start"] >= before["end"], f"{slot} double-booked: {before} {after}"
    reused = [t for t in by_slot[victim_line["slot"]] if t is not tenures[-1]]
    assert reused and all(t["start"] >= killed_at for t in reused)


# ----- the lease folder --------------------------------------------------------------------------


def test_unwritable_lease_folder_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(LeaseFolderError, match="cannot create the lease folder"):
        LeaseFolder(blocker / "leases").ensure()
    with pytest.raises(LeaseFolderError, match="is not a folder"):
        LeaseFolder(blocker).ensure()
    env = fake_env(tmp_path, [GPU_A], **{ENV_LEASES: str(blocker / "leases")})
    out = run_script("-m", "text_recognizer.leasing.gpu_manager", "run", "--", "true", env=env)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "TEXT_RECOGNIZER_GPU_LEASES" in out.stderr
    assert out.stderr.startswith("error: cannot create the lease folder")


def test_read_only_lease_folder(tmp_path, small_disk):
    import subprocess

    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
    else:  # root writes into a mode-0500 folder anyway: a read-only filesystem stops it
        folder = small_disk("64k")
        remount = ["mount", "-o", "remount,ro", str(folder)]
        subprocess.run(remount, check=True, capture_output=True)
    with pytest.raises(LeaseFolderError, match="not writable"):
        LeaseFolder(folder).ensure()


def test_filesystem_without_locks_is_detected(tmp_path, monkeypatch):
    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lease_folder.fcntl, "flock", no_locks)
    with pytest.raises(LeaseFolderError, match="without working file locks"):
        LeaseFolder(tmp_path / "nolock").ensure()

    # locks that exclude nobody
    monkeypatch.setattr(lease_folder.fcntl, "flock", lambda fd, op: None)
    with pytest.raises(LeaseFolderError, match="a second descriptor took a lock"):
        LeaseFolder(tmp_path / "fake-locks").ensure()


def test_default_lease_folder_is_per_user(monkeypatch):
    monkeypatch.delenv(ENV_LEASES, raising=False)
    folder = LeaseFolder()
    assert folder.is_default and folder.path.parent == Path("/tmp")
    assert folder.path.name.startswith("text-recognizer-gpu-leases-")
    assert LeaseFolder(env={ENV_LEASES: "/x/y"}).path == Path("/x/y")


# ----- status ------------------------------------------------------------------------------------


def test_status_lists_gpus_leases_holders_and_free_memory(tmp_path):
    env = fake_env(tmp_path, [GPU_A, GPU_B])
    holder = subprocess.Popen(
        [sys.executable, "-m", "text_recognizer.leasing.gpu_manager", "run", "--run-name",
         "status demo", "--", sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "up"
        out = run_script("-m", "text_recognizer.leasing.gpu_manager", "status", env=env)
        assert out.returncode == 0, out.stderr
        text = out.stdout
        assert str(tmp_path / "leases") in text
        assert "GPU 0  GPU-aaaa-0000" in text and "GPU 1  GPU-bbbb-1111" in text
        assert "15.4 GiB free" in text  # 16000 - 200 MiB on GPU B
        assert f"slot 0: pid {holder.pid} 'status demo' since " in text  # B: least loaded
        assert text.count("slot 0: free") == 1
        report = json.loads(
            run_script(
                "-m", "text_recognizer.leasing.gpu_manager", "status", "--json", env=env
            ).stdout
        )  # fmt: skip
        held = {g["uuid"]: g["slots"][0] for g in report["gpus"]}
        assert held[GPU_B.uuid]["held"] and held[GPU_B.uuid]["holder"]["pid"] == holder.pid
        assert not held[GPU_A.uuid]["held"]
    finally:
        holder.kill()
        holder.wait()
    after = run_script("-m", "text_recognizer.leasing.gpu_manager", "status", env=env).stdout
    assert after.count("slot 0: free") == 2  # the kernel released it on kill -9
    script = run_script_sh("tasks/gpu_status.sh", env=env)
    assert script.returncode == 0 and "GPU 1  GPU-bbbb-1111" in script.stdout


def run_script_sh(path: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", path], cwd=PROJECT_ROOT, env={**os.environ, **env}, capture_output=True, text=True
    )


def test_status_without_driver(tmp_path):
    env = {
        ENV_FAKE_GPUS: str(write_fake(tmp_path / "nodriver.json", driver=False)),
        ENV_LEASES: str(tmp_path / "leases"),
    }
    out = run_script("-m", "text_recognizer.leasing.gpu_manager", "status", env=env)
    assert out.returncode == 0 and "no NVIDIA GPU" in out.stdout


# ----- wiring into run_experiment ----------------------------------------------------------------


def test_gpu_index_that_does_not_exist_is_exit_2(tmp_path, runs_dir):
    env = fake_env(tmp_path, [GPU_A, GPU_B])
    config = json.dumps(
        {"dataset": "SyntheticCharactersDataset", "model": "CharacterModel", "network": "mlp"}
    )
    out = run_script("training/run_experiment.py", config, "--gpu=5", "--nowandb", env=env)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        "error: --gpu=5 does not exist; this machine has GPUs 0..1 (or -1 for any free one)"
    )
    assert not runs_dir.exists() or not any(runs_dir.rglob("summary.json"))


@pytest.fixture
def cuda_torch(monkeypatch, tmp_path):
    """Pretend torch is a CUDA build with a working driver; the fake inventory has two GPUs."""
    import torch

    from text_recognizer.leasing import devices

    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for key in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", ENV_LEASE_INFO):
        monkeypatch.delenv(key, raising=False)
    for key, value in fake_env(tmp_path, [GPU_A, GPU_B]).items():
        monkeypatch.setenv(key, value)
    yield devices
    devices.release_leases()


def test_select_device_leases_and_keeps_the_lease(cuda_torch, tmp_path):
    devices = cuda_torch
    assert devices.select_device(-1, run_name="wired") == "cuda:0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == GPU_B.uuid
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert devices.lease_fields() == {"gpu_index": 1, "gpu_uuid": GPU_B.uuid, "gpu_slot": 0}
    status = GPUManager(lease_dir=tmp_path / "leases").status()
    slots = {g["uuid"]: g["slots"][0] for g in status["gpus"]}
    assert slots[GPU_B.uuid]["held"] and slots[GPU_B.uuid]["holder"]["run"] == "wired"
    devices.label_leases(run="group/run-1")
    assert GPUManager(lease_dir=tmp_path / "leases").holders(GPU_B)[0]["run"] == "group/run-1"
    devices.release_leases()
    assert not GPUManager(lease_dir=tmp_path / "leases").holders(GPU_B)


def test_select_device_by_index_warns_when_leased(cuda_torch, tmp_path, capsys, monkeypatch):
    devices = cuda_torch
    other = GPUManager(lease_dir=tmp_path / "leases", env={}).lease_gpu(GPU_A, "someone else")
    assert devices.select_device(0, run_name="mine") == "cuda:0"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == GPU_A.uuid
    err = capsys.readouterr().err
    assert "GPU 0 is leased by pid" in err and "'someone else'" in err
    other.release()
    devices.release_leases()
    # In one process the pinned CUDA_VISIBLE_DEVICES restricts later runs (CUDA read it already).
    with pytest.raises(UserError, match=r"GPUs 0\.\.0"):
        devices.select_device(1, run_name="mine")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert devices.select_device(1, run_name="mine") == "cuda:0"
    assert devices.lease_fields()["gpu_uuid"] == GPU_B.uuid


# ----- CPU fairness ------------------------------------------------------------------------------


def test_parse_parallel_jobs():
    assert parse_parallel_jobs(["-j2"], 8) == 2
    assert parse_parallel_jobs(["-j", "3"], 8) == 3
    assert parse_parallel_jobs(["--jobs", "4", "--bar"], 8) == 4
    assert parse_parallel_jobs(["--jobs=5"], 8) == 5
    assert parse_parallel_jobs(["-P", "6"], 8) == 6
    assert parse_parallel_jobs(["-j", "50%"], 8) == 4
    assert parse_parallel_jobs(["-j+2"], 8) == 10
    assert parse_parallel_jobs(["-j-3"], 8) == 5
    assert parse_parallel_jobs(["--bar"], 8) == 8  # parallel's default: one job per core
    assert parse_parallel_jobs(["-j0"], 8) is None
    assert parse_parallel_jobs(["-j", "jobsfile"], 8) is None


def test_thread_decision():
    decide = cpu_share._decide_threads
    assert decide(3, {}, 8, 4, 2).threads == 3  # train_args.num_threads wins
    assert decide(None, {}, 8, None, 1).threads is None  # alone: torch's default
    assert decide(None, {}, 8, 2, 1).threads == 4  # parallel -j2 on 8 cores
    assert decide(None, {}, 8, None, 3).threads == 2  # 3 runs holding cpu-run locks
    assert decide(None, {}, 2, 8, 1).threads == 1  # never below one
    assert decide(None, {"OMP_NUM_THREADS": "4"}, 8, 2, 1).threads is None
    assert decide(None, {cpu_share.ENV_FAIR_THREADS: "0"}, 8, 2, 1).threads is None


def test_share_cpu_counts_runs_side_by_side(tmp_path):
    env = {ENV_LEASES: str(tmp_path / "leases")}
    first = cpu_share.share_cpu(None, "first", env=env, cores=8)
    second = cpu_share.share_cpu(None, "second", env=env, cores=8)
    third = cpu_share.share_cpu(None, "third", env=env, cores=8)
    assert (first.threads, second.threads, third.threads) == (None, 4, 2)
    assert third.lease is not None and third.lease.holder["threads"] == 2
    report = GPUManager(FakeInventory([]), tmp_path / "leases", env=env).status()
    assert {r["holder"]["run"] for r in report["cpu_runs"]} == {"first", "second", "third"}
    for share in (first, second):
        share.lease.release()
    assert cpu_share.share_cpu(None, "fourth", env=env, cores=8).threads == 4  # third + fourth
    third.lease.release()


def test_share_cpu_survives_a_broken_lease_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    share = cpu_share.share_cpu(
        None, "x", env={ENV_LEASES: str(tmp_path / "file" / "sub")}, cores=4
    )
    assert share.threads is None and share.lease is None
    assert "will not share the CPU cores" in capsys.readouterr().err


def test_a_run_under_a_leasing_parent_uses_the_parents_gpu(cuda_torch, tmp_path, monkeypatch):
    """``gpu_manager run -- wandb agent ...``: the agent's runs must not wait for their parent."""
    devices = cuda_torch
    parent = GPUManager(lease_dir=tmp_path / "leases", env=os.environ)  # pins os.environ
    lease = parent.acquire("agent")
    assert os.environ[ENV_LEASE_INFO] == f"{GPU_B.uuid} slot 0"
    assert devices.select_device(-1, run_name="child") == "cuda:0"
    assert devices.lease_fields() == {}  # no lease of its own
    assert parent.holders(GPU_B)[0]["run"] == "agent"
    lease.release()  # a stale variable (the parent is gone) is ignored: lease as usual
    assert inherited_lease() is None
    assert devices.select_device(-1, run_name="alone") == "cuda:0"
    assert devices.lease_fields()["gpu_uuid"] == GPU_B.uuid
    devices.release_leases()
    assert ENV_LEASE_INFO not in os.environ  # our own lease's variable is not passed on


def test_sigterm_while_waiting_for_a_gpu_is_exit_130_without_traceback(
    cuda_torch, tmp_path, capsys
):
    from text_recognizer.run.cli import run_experiment_main

    holders = [
        GPUManager(lease_dir=tmp_path / "leases", env={}).lease_gpu(g) for g in (GPU_A, GPU_B)
    ]
    config = {"dataset": "SyntheticCharactersDataset", "model": "CharacterModel", "network": "mlp"}
    previous = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        code = run_experiment_main([json.dumps(config), "--gpu=-1", "--nowandb"])
    finally:
        timer.cancel()
        signal.signal(signal.SIGTERM, previous)
        for lease in holders:
            lease.release()
    err = capsys.readouterr().err
    assert code == 130
    assert "waiting for a GPU" in err and "interrupted before the run started" in err
