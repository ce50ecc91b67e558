"""Pick the device and the CPU thread count of a run, holding the leases that back them.

``--gpu=-1`` leases a GPU from the GPUManager (docs/design.md §6) and ``--gpu=N`` leases GPU N (nvidia-smi
order) when a slot is free; either way ``CUDA_VISIBLE_DEVICES`` then names that one GPU and the run
uses ``cuda:0``. This happens before anything touches CUDA, because CUDA reads the variable once.
With no NVIDIA driver or no CUDA build of torch the run goes on the CPU after one notice.

The leases are kept here, open, for the whole run; ``release_leases`` ends them (the process ending
does too, however it ends).
"""

from __future__ import annotations

import os
from typing import Any

from text_recognizer import progress
from text_recognizer.errors import NoGpuDriver, UserError
from text_recognizer.leasing.cpu_share import share_cpu
from text_recognizer.leasing.gpu_inventory import GpuInfo
from text_recognizer.leasing.leases import ENV_LEASE_INFO, Lease, inherited_lease
from text_recognizer.leasing.manager import GPUManager
from text_recognizer.leasing.slurm_job import in_slurm, slurm_gpus

_NO_GPU = "notice: no GPU available ({why}); running on the CPU"
_HELD: list[Lease] = []
_FIELDS: dict[str, Any] = {}


def _notice(why: str) -> None:
    progress.line(_NO_GPU.format(why=why))


def _hold(lease: Lease | None) -> None:
    if lease is not None:
        _HELD.append(lease)
        _FIELDS.update(lease.summary())


def _index_error(gpu: int, count: int, manager: GPUManager) -> UserError:
    cvd = manager.env.get("CUDA_VISIBLE_DEVICES")
    where = f" (CUDA_VISIBLE_DEVICES={cvd!r})" if cvd is not None else ""
    return UserError(
        f"--gpu={gpu} does not exist; this machine has GPUs 0..{count - 1}{where} "
        "(or -1 for any free one)"
    )


def check_gpu_index(gpu: int) -> None:
    """Refuse a ``--gpu`` index that names no GPU, before torch is even imported (NVML only).

    Without NVML nothing can be said here; ``select_device`` decides (no GPU: the CPU)."""
    manager = GPUManager()
    try:
        visible = manager.visible_gpus()
    except NoGpuDriver:
        return
    if visible and gpu >= len(visible):
        raise _index_error(gpu, len(visible), manager)


def select_device(gpu: int | None, run_name: str | None = None) -> str:
    """Return a torch device string. ``gpu`` None means CPU; -1 means any free GPU (leased)."""
    release_leases()
    if gpu is None:
        return "cpu"
    if in_slurm():
        return _slurm_device(gpu)
    parent = inherited_lease()
    if parent is not None and gpu in (-1, 0):
        import torch

        if not torch.cuda.is_available():
            _notice("CUDA cannot be initialised; a CPU build of torch or no driver")
            return "cpu"
        progress.line(f"using the GPU leased by the parent process ({parent})")
        return "cuda:0"
    manager = GPUManager()
    try:
        visible = manager.visible_gpus()
    except NoGpuDriver as e:
        return _without_nvml(gpu, str(e))
    if not visible:
        progress.line(manager.none_visible_notice())
        return "cpu"
    if gpu >= len(visible):
        raise _index_error(gpu, len(visible), manager)
    import torch  # importing torch does not initialise CUDA (is_available below does)

    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        _notice("a CPU build of torch")  # checked before leasing: never wait for a GPU in vain
        return "cpu"
    if gpu == -1:
        lease = manager.acquire(run_name)
        if lease is None:
            return "cpu"
    else:
        lease = _lease_by_index(manager, visible[gpu], run_name)
    if not torch.cuda.is_available():
        if lease is not None:
            lease.release()
        _notice("CUDA cannot be initialised; is the NVIDIA driver loaded?")
        return "cpu"
    _hold(lease)
    if lease is not None:
        _FIELDS["_owns_lease_env"] = True
    return "cuda:0"


def _slurm_device(gpu: int) -> str:
    """Under Slurm the GPUs are the ones Slurm gave this job (placement is Slurm's, as it is
    torchrun's under torchrun): no lease; ``--gpu=-1`` takes the first, ``--gpu=N`` the N-th."""
    given = slurm_gpus()
    if not given:
        _notice("Slurm gave this job no GPU; ask for one with --gpus-per-run or --gres=gpu:1")
        return "cpu"
    index = max(gpu, 0)
    if index >= len(given):
        raise UserError(
            f"--gpu={gpu} does not exist in this Slurm job, which was given {len(given)} GPU(s) "
            f"({','.join(given)}); use --gpu=-1, or ask Slurm for more"
        )
    import torch

    if not torch.cuda.is_available():
        _notice("CUDA cannot be initialised; a CPU build of torch or no driver")
        return "cpu"
    progress.line(f"using GPU {index} of the {len(given)} Slurm gave this job ({given[index]})")
    return f"cuda:{index}"


def _lease_by_index(manager: GPUManager, gpu: GpuInfo, run_name: str | None) -> Lease | None:
    """``--gpu=N``: lease a slot on that GPU when one is free; when none is, say who holds them and
    use it anyway (the user named it), unleased. Either way the process is pinned to it."""
    lease = manager.lease_gpu(gpu, run_name)
    if lease is None:
        holders = manager.holders(gpu)
        who = ", ".join(f"pid {h.get('pid', '?')} {h.get('run', '?')!r}" for h in holders)
        progress.line(
            f"warning: GPU {gpu.index} is leased by {who or 'another run'}; using it "
            "anyway as --gpu asked (--gpu=-1 waits for a free GPU)"
        )
    manager.pin(gpu, lease)
    return lease


def _without_nvml(gpu: int, why: str) -> str:
    """No NVML: without a GPU that is the CPU; a working CUDA without NVML runs unleased."""
    import torch

    if not torch.cuda.is_available():
        _notice("no NVIDIA driver" if "NVML" in why else why)
        return "cpu"
    count = torch.cuda.device_count()
    if gpu >= count:
        raise UserError(
            f"--gpu={gpu} does not exist; this machine has GPUs 0..{count - 1} (or -1 for any)"
        )
    progress.line(f"warning: cannot lease a GPU ({why}); using cuda:{max(gpu, 0)} unleased")
    return f"cuda:{max(gpu, 0)}"


def select_num_threads(requested: int | None, run_name: str | None = None) -> int | None:
    """The torch thread count for this run (None: keep torch's default), sharing the cores fairly
    with runs started side by side (see ``cpu_share.share_cpu``)."""
    share = share_cpu(requested, run_name)
    _hold(share.lease)
    if share.threads and not requested:
        progress.line(f"threads: {share.threads} ({share.reason})")
    _FIELDS["threads_reason"] = share.reason
    return share.threads


def label_leases(**fields: Any) -> None:
    """Add details (e.g. the run folder) to what ``gpu_manager status`` shows for our leases."""
    for lease in _HELD:
        lease.update(**fields)


def lease_fields() -> dict[str, Any]:
    """GPU lease and thread decision, for summary.json."""
    return {k: v for k, v in _FIELDS.items() if not k.startswith("_")}


def release_leases() -> None:
    """End this process's leases (a new run in the same process starts from none)."""
    while _HELD:
        _HELD.pop().release()
    if _FIELDS.get("_owns_lease_env"):
        os.environ.pop(ENV_LEASE_INFO, None)  # ours, not a parent's: do not pass it on
    _FIELDS.clear()
