"""What Slurm gave this run: its job ids, node, GPUs and CPUs, read from the job's environment.

Under Slurm (``SLURM_JOB_ID`` set) placement belongs to Slurm, as it belongs to torchrun under
torchrun: the run takes no GPU lease and uses the GPUs Slurm gave it (Slurm sets
``CUDA_VISIBLE_DEVICES`` to them, so the first is ``cuda:0``), and its CPU threads are
``--cpus-per-task``. ``summary.json`` records ``slurm`` (see ``record_fields``), whose ``nonce``
(one per submitted task, never reused like Slurm's job ids) is how a requeued task finds the run
folder it left (``orchestration/slurm_task.py``).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from typing import Any


def in_slurm(env: Mapping[str, str] | None = None) -> bool:
    """True inside a Slurm job (sbatch, srun, salloc)."""
    env = os.environ if env is None else env
    return bool(env.get("SLURM_JOB_ID", "").strip())


NONCE_ENV = "TEXT_RECOGNIZER_SLURM_NONCE"  # set by the Slurm task: which submission a run is


def slurm_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs Slurm gave this job step (``SLURM_STEP_GPUS``, else ``SLURM_JOB_GPUS``, else
    ``SLURM_GPUS_ON_NODE`` of them); [] when it gave none. ``CUDA_VISIBLE_DEVICES`` alone is never
    trusted: sbatch exports the login shell's, so it may name GPUs Slurm did not give."""
    env = os.environ if env is None else env
    for key in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        value = env.get(key, "").strip()
        if value:
            return [g.strip() for g in value.split(",") if g.strip()]
    count = env.get("SLURM_GPUS_ON_NODE", "").strip()
    if not (count.isascii() and count.isdigit() and 0 < int(count) < 10_000):
        return []
    visible = [g.strip() for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    return visible if len(visible) == int(count) else [str(i) for i in range(int(count))]


def slurm_cpus(env: Mapping[str, str] | None = None) -> int | None:
    """``--cpus-per-task`` of this job (``SLURM_CPUS_PER_TASK``), or None when not set or unreadable."""
    env = os.environ if env is None else env
    value = env.get("SLURM_CPUS_PER_TASK", "").strip()
    if value.isascii() and value.isdigit() and 0 < int(value) < 100_000:
        return int(value)
    return None


def task_key(env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """What names this Slurm task across requeues: the array job and task ids, or the job id
    outside an array (Slurm keeps both when it requeues a job). None outside Slurm."""
    env = os.environ if env is None else env
    if not in_slurm(env):
        return None
    array_job, array_task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return {"array_job_id": array_job, "array_task_id": array_task}
    return {"job_id": env["SLURM_JOB_ID"]}


def record_fields(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``{"slurm": {...}}`` for summary.json under Slurm, else {} (the key is absent outside it)."""
    env = os.environ if env is None else env
    if not in_slurm(env):
        return {}
    info: dict[str, Any] = {"job_id": env["SLURM_JOB_ID"]}
    for field, key in (
        ("array_job_id", "SLURM_ARRAY_JOB_ID"),
        ("array_task_id", "SLURM_ARRAY_TASK_ID"),
        ("partition", "SLURM_JOB_PARTITION"),
        ("restart_count", "SLURM_RESTART_COUNT"),
    ):
        if env.get(key):
            info[field] = env[key]
    if env.get(NONCE_ENV):
        info["nonce"] = env[NONCE_ENV]
    info["node"] = env.get("SLURMD_NODENAME") or platform.node()
    info["gpus"] = slurm_gpus(env)
    cpus = slurm_cpus(env)
    if cpus is not None:
        info["cpus_per_task"] = cpus
    return {"slurm": info}
