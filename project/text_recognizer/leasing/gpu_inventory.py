"""Which GPUs this machine has and how loaded they are: the list the GPUManager chooses from.

The manager needs no more than a :class:`GpuInfo` per GPU (index, UUID, memory, utilization). NVML
gives that without starting CUDA, which must not start before the manager has set
``CUDA_VISIBLE_DEVICES`` (CUDA reads it once); a fake inventory read from a JSON file
(``TEXT_RECOGNIZER_FAKE_GPUS``) stands in for NVML in tests and demos on machines without a GPU.
Kept apart from the leases, so that choosing a GPU (``filter_visible``, ``rank_gpus``) comes down to
plain functions of that list.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from text_recognizer.errors import NoGpuDriver, UserError, one_line

ENV_FAKE_GPUS = "TEXT_RECOGNIZER_FAKE_GPUS"
MAX_FAKE_GPUS_BYTES = 1 << 20  # a test's GPU list: a few hundred bytes


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML (and nvidia-smi) numbers it: ``index`` is the PCI bus order."""

    index: int
    uuid: str
    memory_used_mib: float
    memory_total_mib: float
    utilization_percent: float
    name: str = ""

    @property
    def memory_percent(self) -> float:
        """Memory in use, in %: what the memory threshold is compared with."""
        if self.memory_total_mib <= 0:
            return 0.0
        return 100.0 * self.memory_used_mib / self.memory_total_mib

    @property
    def memory_free_mib(self) -> float:
        """Memory not in use, in MiB (never negative, whatever the driver reports)."""
        return max(0.0, self.memory_total_mib - self.memory_used_mib)


class GpuInventory(Protocol):
    """Where the manager learns which GPUs exist and how loaded they are (NVML, or a fake)."""

    def gpus(self) -> list[GpuInfo]:
        """All GPUs in nvidia-smi order; raise NoGpuDriver when there is no driver."""
        ...


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlInventory:
    """The real inventory: NVML through ``pynvml`` (package nvidia-ml-py); never touches CUDA."""

    def gpus(self) -> list[GpuInfo]:
        """Every GPU NVML sees, in nvidia-smi order; NoGpuDriver without a usable NVML."""
        try:
            import pynvml
        except ImportError:
            raise NoGpuDriver("nvidia-ml-py (pynvml) is not installed") from None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise NoGpuDriver(f"NVML: {e}") from None
        try:
            out = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
                try:
                    utilization = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
                except pynvml.NVMLError:  # not supported (MIG, some vGPUs): judge by memory
                    utilization = 0.0
                out.append(
                    GpuInfo(
                        index=i,
                        uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                        name=_text(pynvml.nvmlDeviceGetName(handle)),
                        memory_used_mib=memory.used / 2**20,
                        memory_total_mib=memory.total / 2**20,
                        utilization_percent=utilization,
                    )
                )
            return out
        except pynvml.NVMLError as e:
            raise NoGpuDriver(f"NVML: {e}") from None
        finally:
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()


class FakeInventory:
    """GPUs from a list, or from a JSON file re-read on every call (so a test can change the load).

    File format: ``{"gpus": [{"uuid": "GPU-a", "memory_used_mib": 0, "memory_total_mib": 16384,
    "utilization_percent": 0, "name": "..."}, ...]}`` (or just the list); ``index`` defaults to
    the position. ``{"driver": false}`` pretends there is no NVIDIA driver.
    """

    def __init__(self, source: Path | str | Sequence[Mapping[str, Any] | GpuInfo]) -> None:
        self.source = source

    def gpus(self) -> list[GpuInfo]:
        """The list, or the file read afresh; a malformed file is a one-line UserError."""
        if isinstance(self.source, (str, Path)):
            from text_recognizer.fileio import read_small_text

            where = f"fake GPU inventory {self.source} ({ENV_FAKE_GPUS})"
            # Read without blocking and bounded: a FIFO named here would hang `status` for ever.
            text = read_small_text(
                self.source, MAX_FAKE_GPUS_BYTES, f"fake GPU inventory ({ENV_FAKE_GPUS})"
            )
            try:
                data: Any = json.loads(text)
            except (ValueError, RecursionError) as e:
                raise UserError(one_line(f"{where}: {type(e).__name__}: {e}")[:300]) from None
        else:
            where, data = "fake GPU inventory", self.source
        if isinstance(data, dict):
            if data.get("driver") is False:
                raise NoGpuDriver("no NVIDIA driver (fake inventory)")
            data = data.get("gpus", [])
        if not isinstance(data, list):
            raise UserError(f"{where}: expected a list of GPUs")
        out = []
        for i, item in enumerate(data):
            if isinstance(item, GpuInfo):
                out.append(item)
                continue
            try:
                out.append(
                    GpuInfo(
                        index=int(item.get("index", i)),
                        uuid=str(item.get("uuid", f"GPU-fake-{i}")),
                        memory_used_mib=float(item.get("memory_used_mib", 0.0)),
                        memory_total_mib=float(item.get("memory_total_mib", 16384.0)),
                        utilization_percent=float(item.get("utilization_percent", 0.0)),
                        name=str(item.get("name", "Fake GPU")),
                    )
                )
            except (AttributeError, TypeError, ValueError) as e:
                raise UserError(f"{where}: gpus[{i}] is malformed ({e})") from None
        return out


def inventory_from_env(env: Mapping[str, str] | None = None) -> GpuInventory:
    """NVML, unless ``TEXT_RECOGNIZER_FAKE_GPUS`` names a fake inventory file."""
    env = os.environ if env is None else env
    fake = env.get(ENV_FAKE_GPUS)
    return FakeInventory(fake) if fake else NvmlInventory()


def filter_visible(gpus: Sequence[GpuInfo], cuda_visible_devices: str | None) -> list[GpuInfo]:
    """The GPUs a ``CUDA_VISIBLE_DEVICES`` the user set lets us use, in its order.

    Entries are nvidia-smi indices or (prefixes of) UUIDs; as in CUDA, the list stops at the first
    entry that names no GPU. Unset means every GPU.
    """
    if cuda_visible_devices is None:
        return list(gpus)
    out: list[GpuInfo] = []
    for raw in cuda_visible_devices.split(","):
        entry = raw.strip().lower()
        if re.fullmatch(r"-?\d+", entry):
            found = [g for g in gpus if g.index == int(entry)]
        else:
            found = [
                g
                for g in gpus
                if entry
                and (g.uuid.lower().startswith(entry) or g.uuid.lower().startswith("gpu-" + entry))
            ]
        if len(found) != 1 or found[0] in out:
            break
        out.append(found[0])
    return out


def rank_gpus(
    gpus: Sequence[GpuInfo],
    leased: Mapping[str, int],
    slots_per_gpu: int,
    max_memory_percent: float,
    max_utilization_percent: float,
) -> list[GpuInfo]:
    """GPUs that can take one more run, least loaded first.

    A GPU is skipped when all its slots are leased or its memory is over the threshold. The
    utilization threshold only applies to a GPU none of our runs holds: once one of our runs is on
    it, the utilization is ours and ``slots_per_gpu`` is the limit.
    """
    ok = [
        g
        for g in gpus
        if leased.get(g.uuid, 0) < slots_per_gpu
        and g.memory_percent <= max_memory_percent
        and (leased.get(g.uuid, 0) > 0 or g.utilization_percent <= max_utilization_percent)
    ]
    return sorted(
        ok, key=lambda g: (leased.get(g.uuid, 0), g.memory_percent, g.utilization_percent, g.index)
    )
