"""The GPUManager: which GPU a run may lease, taking the lease (waiting while none is free), and
pinning the run to it; plus the status report of every GPU, slot and holder.

The decisions live here, apart from the lock files (:mod:`~text_recognizer.leasing.lease_folder`,
:mod:`~text_recognizer.leasing.leases`) and from the command that prints them
(:mod:`~text_recognizer.leasing.gpu_manager`), so that a run (``devices``) and the command share one
manager and neither has to import argparse or the other. Which GPUs exist and how loaded they are
comes from :mod:`~text_recognizer.leasing.gpu_inventory`.

Settings (arguments win over the environment):

    TEXT_RECOGNIZER_GPU_LEASES           lease folder (default /tmp/text-recognizer-gpu-leases-$USER)
    TEXT_RECOGNIZER_GPU_SLOTS            runs per GPU (default 1)
    TEXT_RECOGNIZER_GPU_MAX_MEMORY       skip a GPU whose memory is more than this % in use (50)
    TEXT_RECOGNIZER_GPU_MAX_UTILIZATION  skip an unleased GPU busier than this % (50)
    TEXT_RECOGNIZER_GPU_WAIT_TIMEOUT     seconds to wait for a free GPU (default: no limit)
    TEXT_RECOGNIZER_FAKE_GPUS            a JSON file of GPUs that replaces NVML (tests, demos)
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from text_recognizer import progress
from text_recognizer.errors import GpuWaitTimeout, NoGpuDriver, UserError
from text_recognizer.leasing.gpu_inventory import (
    GpuInfo,
    GpuInventory,
    filter_visible,
    inventory_from_env,
    rank_gpus,
)
from text_recognizer.leasing.lease_folder import JUNK_HINT, LeaseFolder
from text_recognizer.leasing.leases import (
    CPU_RUN_PREFIX,
    ENV_LEASE_INFO,
    Lease,
    holder_info,
    slot_file,
)

ENV_SLOTS = "TEXT_RECOGNIZER_GPU_SLOTS"
ENV_MAX_MEMORY = "TEXT_RECOGNIZER_GPU_MAX_MEMORY"
ENV_MAX_UTILIZATION = "TEXT_RECOGNIZER_GPU_MAX_UTILIZATION"
ENV_TIMEOUT = "TEXT_RECOGNIZER_GPU_WAIT_TIMEOUT"

DEFAULT_SLOTS = 1
DEFAULT_MAX_MEMORY = 50.0
DEFAULT_MAX_UTILIZATION = 50.0
# The wait messages point at the command (gpu_manager.py), which imports this module: named here.
STATUS_COMMAND = "python -m text_recognizer.leasing.gpu_manager status"


def _env_number(
    env: Mapping[str, str], key: str, default: float | None, low: float, high: float
) -> float | None:
    """The setting ``key`` of ``env`` as a number from ``low`` to ``high`` (``default`` when unset);
    a bad value is a one-line UserError naming the variable, not a traceback in every run."""
    raw = env.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        raise UserError(f"{key} must be a number from {low:g} to {high:g}, got {raw!r}")
    return value + 0.0  # -0.0 -> 0.0, so that messages never say "-0s"


def check_number(name: str, value: float, low: float, high: float) -> float:
    """``value`` if it is a finite number from ``low`` to ``high``, else a one-line UserError
    (nan compares false with everything, so it must be refused, not compared)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not low <= number <= high:  # false for nan
        raise UserError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
    return number + 0.0  # -0.0 -> 0.0, so that messages never say "-0s"


class GPUManager:
    """Leases GPUs to runs: picks a free GPU under the thresholds, waits when none is, and sets
    ``CUDA_VISIBLE_DEVICES``. Use one per run; keep the returned Lease for the whole run."""

    def __init__(
        self,
        inventory: GpuInventory | None = None,
        lease_dir: Path | str | None = None,
        *,
        slots_per_gpu: int | None = None,
        max_memory_percent: float | None = None,
        max_utilization_percent: float | None = None,
        poll_interval: float = 1.0,
        notice_every: float = 60.0,
        env: MutableMapping[str, str] | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.env = os.environ if env is None else env
        self.inventory = inventory if inventory is not None else inventory_from_env(self.env)
        self.folder = LeaseFolder(lease_dir, self.env)
        slots = (
            slots_per_gpu
            if slots_per_gpu is not None
            else _env_number(self.env, ENV_SLOTS, DEFAULT_SLOTS, 1, 64)
        )
        if slots != int(slots or 0) or not 1 <= int(slots or 0) <= 64:
            raise UserError(
                f"slots per GPU (--slots) must be a whole number from 1 to 64, got {slots}"
            )
        self.slots_per_gpu = int(slots or DEFAULT_SLOTS)
        self.max_memory_percent = (
            check_number("--max-memory", max_memory_percent, 0, 100)
            if max_memory_percent is not None
            else _env_number(self.env, ENV_MAX_MEMORY, DEFAULT_MAX_MEMORY, 0, 100)
        )
        self.max_utilization_percent = (
            check_number("--max-utilization", max_utilization_percent, 0, 100)
            if max_utilization_percent is not None
            else _env_number(self.env, ENV_MAX_UTILIZATION, DEFAULT_MAX_UTILIZATION, 0, 100)
        )
        self.poll_interval = check_number("--poll-interval", poll_interval, 0.001, 3600)
        self.notice_every = check_number("--notice-every", notice_every, 0, 1e9)
        self.stream = stream

    def _say(self, message: str) -> None:
        """A line for humans: to ``stream`` when one was given (tests), else the progress channel."""
        if self.stream is not None:
            print(message, file=self.stream, flush=True)
        else:
            progress.line(message)

    def default_timeout(self) -> float | None:
        """Seconds to wait for a GPU from ``TEXT_RECOGNIZER_GPU_WAIT_TIMEOUT``; None: no limit."""
        return _env_number(self.env, ENV_TIMEOUT, None, 0, 1e9)

    # -- what there is --------------------------------------------------------------------------
    def visible_gpus(self) -> list[GpuInfo]:
        """The GPUs this run may use: all, or those a CUDA_VISIBLE_DEVICES already set names."""
        return filter_visible(self.inventory.gpus(), self.env.get("CUDA_VISIBLE_DEVICES"))

    @staticmethod
    def slot_name(gpu: GpuInfo, slot: int) -> str:
        """The lock file of ``slot`` on ``gpu`` (see ``leases.slot_file``)."""
        return slot_file(gpu.uuid, slot)

    def leased_slots(self, gpu: GpuInfo) -> int:
        """How many of ``gpu``'s slots some run holds now: the load that ranking counts first."""
        return sum(self.folder.is_held(self.slot_name(gpu, k)) for k in range(self.slots_per_gpu))

    # -- leasing ----------------------------------------------------------------------------------
    def try_acquire(
        self, run_name: str | None = None, gpus: Sequence[GpuInfo] | None = None
    ) -> Lease | None:
        """One pass: lease a slot on the least loaded eligible GPU, or return None."""
        gpus = self.visible_gpus() if gpus is None else gpus
        self.folder.ensure()
        for gpu in self._eligible(gpus):
            for slot in range(self.slots_per_gpu):
                lease = self._lease_slot(gpu, slot, run_name)
                if lease is not None:
                    return lease
        return None

    def _eligible(self, gpus: Sequence[GpuInfo]) -> list[GpuInfo]:
        """GPUs with an unleased slot under the thresholds, least loaded first."""
        leased = {g.uuid: self.leased_slots(g) for g in gpus}
        return rank_gpus(
            gpus,
            leased,
            self.slots_per_gpu,
            self.max_memory_percent or 0.0,
            self.max_utilization_percent or 0.0,
        )

    def junk_slots(self, gpu: GpuInfo) -> list[str]:
        """``PATH (why)`` of each unheld slot of ``gpu`` that something not a lease file blocks."""
        out = []
        for slot in range(self.slots_per_gpu):
            name = self.slot_name(gpu, slot)
            why = self.folder.junk(name)
            if why is not None and not self.folder.is_held(name):
                out.append(f"{self.folder.path / name} ({why})")
        return out

    def _blocked_by_junk(self, gpus: Sequence[GpuInfo]) -> list[str]:
        """The junk in every slot the GPUs free under the thresholds have, when that is all of them
        ([] otherwise): then no wait ends until someone removes it, and the wait must say so."""
        junk: list[str] = []
        for gpu in self._eligible(gpus):
            paths = self.junk_slots(gpu)
            if self.leased_slots(gpu) + len(paths) < self.slots_per_gpu:
                return []  # a slot that is free, or that a run took meanwhile: not junk's doing
            junk += paths
        return junk

    def _warn_if_blocked(self, gpus: Sequence[GpuInfo]) -> bool:
        """Say once, naming the files, that junk blocks every free slot; True when it did."""
        junk = self._blocked_by_junk(gpus)
        if junk:
            self._say(
                "warning: every slot of the free GPUs is blocked by a file that is "
                f"{JUNK_HINT}: {', '.join(junk)}; waiting until they are removed"
            )
        return bool(junk)

    def _lease_slot(self, gpu: GpuInfo, slot: int, run_name: str | None) -> Lease | None:
        name = self.slot_name(gpu, slot)
        fd = self.folder.try_lock(name)
        if fd is None:
            return None
        info = holder_info(run_name, gpu_uuid=gpu.uuid, gpu_index=gpu.index, slot=slot)
        return Lease(self.folder, name, fd, info, gpu=gpu, slot=slot)

    def acquire(
        self,
        run_name: str | None = None,
        timeout: float | None = -1.0,
        set_env: bool = True,
    ) -> Lease | None:
        """Lease a GPU, waiting (with a visible message) while none is free.

        Returns None, after one notice, when there is no driver or no visible GPU: the run goes on
        the CPU. ``timeout`` -1 means the environment's (default: wait as long as it takes).
        Raises GpuWaitTimeout when the timeout passes first.
        """
        timeout = self._wait_limit(timeout)
        try:
            gpus = self.visible_gpus()
        except NoGpuDriver as e:
            self._say(f"notice: no GPU available ({e}); running on the CPU")
            return None
        if not gpus:
            self._say(self.none_visible_notice())
            return None
        lease = self._wait(run_name, gpus, timeout)
        if set_env:
            self.apply_env(lease)
        return lease

    def _wait_limit(self, timeout: float | None) -> float | None:
        """``acquire``'s timeout checked: -1 means the environment's, None no limit."""
        if timeout is not None and timeout == -1.0:
            return self.default_timeout()
        if timeout is not None:
            return check_number("the GPU wait timeout (--timeout)", timeout, 0, 1e9)
        return None

    def _wait(self, run_name: str | None, gpus: list[GpuInfo], timeout: float | None) -> Lease:
        """Try every ``poll_interval`` (jittered, so waiting runs do not race in step) until a slot
        is ours, saying why not at once and every ``notice_every``; GpuWaitTimeout past timeout."""
        started = time.monotonic()
        next_notice = 0.0
        warned_junk = False
        while True:
            lease = self.try_acquire(run_name, gpus)
            waited = time.monotonic() - started
            if lease is not None:
                if next_notice > 0:
                    self._say(f"leased {self.describe(lease)} after waiting {waited:.0f}s")
                return lease
            warned_junk = warned_junk or self._warn_if_blocked(gpus)
            if timeout is not None and waited >= timeout:
                raise GpuWaitTimeout(
                    f"no GPU became free within {timeout:g}s ({self._busy_reasons(gpus)}); "
                    f"raise {ENV_TIMEOUT} or see `{STATUS_COMMAND}`"
                )
            if waited >= next_notice:
                self._say(self._wait_notice(gpus, waited, timeout, first=next_notice == 0))
                next_notice = max(waited, 1e-9) + self.notice_every
            pause = self.poll_interval * random.uniform(0.8, 1.2)
            if timeout is not None:
                pause = max(0.0, min(pause, timeout - waited))
            time.sleep(pause)
            with contextlib.suppress(NoGpuDriver):
                gpus = self.visible_gpus()  # fresh memory and utilization figures

    def _wait_notice(
        self, gpus: Sequence[GpuInfo], waited: float, timeout: float | None, first: bool
    ) -> str:
        """Why this run waits (who holds each GPU, or its load): the line a user sees at once."""
        took = f"{waited:.1f}s" if waited < 10 else f"{waited:.0f}s"
        prefix = "waiting for a GPU" if first else f"still waiting for a GPU ({took})"
        limit = f"; timeout {timeout:g}s" if first and timeout is not None else ""
        return f"{prefix}: {self._busy_reasons(gpus)}{limit}; see `{STATUS_COMMAND}`"

    def lease_gpu(self, gpu: GpuInfo, run_name: str | None = None) -> Lease | None:
        """Lease a slot on this GPU without waiting (for ``--gpu=N``); None when all are taken."""
        self.folder.ensure()
        for slot in range(self.slots_per_gpu):
            lease = self._lease_slot(gpu, slot, run_name)
            if lease is not None:
                return lease
        return None

    def pin(self, gpu: GpuInfo, lease: Lease | None = None) -> None:
        """Make ``gpu`` the only CUDA device of this process (and of what it starts)."""
        self.env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        self.env["CUDA_VISIBLE_DEVICES"] = gpu.uuid
        if lease is not None:
            self.env[ENV_LEASE_INFO] = f"{gpu.uuid} slot {lease.slot}"

    def apply_env(self, lease: Lease) -> None:
        """Pin this process to the leased GPU (a CPU lease has none: nothing to pin)."""
        if lease.gpu is not None:
            self.pin(lease.gpu, lease)

    # -- messages ---------------------------------------------------------------------------------
    def describe(self, lease: Lease) -> str:
        """``GPU <index> (<uuid>) slot <k>``: how messages name a lease."""
        gpu = lease.gpu
        if gpu is None:
            return lease.name
        return f"GPU {gpu.index} ({gpu.uuid}) slot {lease.slot}"

    def none_visible_notice(self) -> str:
        """The notice for "no GPU to lease", naming a CUDA_VISIBLE_DEVICES that hides them all."""
        cvd = self.env.get("CUDA_VISIBLE_DEVICES")
        why = f"CUDA_VISIBLE_DEVICES={cvd!r} names no GPU" if cvd is not None else "no GPU found"
        return f"notice: no GPU available ({why}); running on the CPU"

    def holders(self, gpu: GpuInfo) -> list[dict[str, Any]]:
        """Slot and holder details of each held slot of ``gpu``, for messages naming who waits on
        whom."""
        out = []
        for slot in range(self.slots_per_gpu):
            name = self.slot_name(gpu, slot)
            if self.folder.is_held(name):
                out.append({"slot": slot, **(self.folder.holder(name) or {})})
        return out

    def _busy_reasons(self, gpus: Sequence[GpuInfo]) -> str:
        """One reason per GPU why it cannot be leased now (or "free"), for the wait messages."""
        parts = []
        for g in gpus:
            holders = self.holders(g)
            if len(holders) >= self.slots_per_gpu:
                who = ", ".join(f"pid {h.get('pid', '?')} {h.get('run', '?')!r}" for h in holders)
                parts.append(f"GPU {g.index} leased by {who}")
            elif g.memory_percent > (self.max_memory_percent or 0):
                parts.append(
                    f"GPU {g.index} memory {g.memory_percent:.0f}% used "
                    f"> {self.max_memory_percent:g}%"
                )
            elif not holders and g.utilization_percent > (self.max_utilization_percent or 0):
                parts.append(
                    f"GPU {g.index} utilization {g.utilization_percent:.0f}% "
                    f"> {self.max_utilization_percent:g}%"
                )
            elif len(holders) + len(self.junk_slots(g)) >= self.slots_per_gpu:
                parts.append(f"GPU {g.index} blocked by files that are not lease files")
            else:
                parts.append(f"GPU {g.index} free")
        return "; ".join(parts)

    # -- status -----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """GPUs, their slots and holders, CPU runs, as a dict (``status --json`` prints it)."""
        report: dict[str, Any] = {
            "lease_dir": str(self.folder.path),
            "slots_per_gpu": self.slots_per_gpu,
            "max_memory_percent": self.max_memory_percent,
            "max_utilization_percent": self.max_utilization_percent,
            "cuda_visible_devices": self.env.get("CUDA_VISIBLE_DEVICES"),
            "driver": None,
            "gpus": [],
            "other_leases": [],
            "cpu_runs": [],
        }
        try:
            gpus = self.inventory.gpus()
        except NoGpuDriver as e:
            report["driver"] = str(e)
            gpus = []
        visible = {g.uuid for g in filter_visible(gpus, self.env.get("CUDA_VISIBLE_DEVICES"))}
        seen: set[str] = set()
        for g in gpus:
            slots = self._slot_reports(g)
            seen.update(self.slot_name(g, s["slot"]) for s in slots)
            report["gpus"].append({**asdict(g), "visible": g.uuid in visible, "slots": slots})
        for name in self.folder.names("gpu-"):
            if name not in seen and self.folder.is_held(name):
                report["other_leases"].append({"file": name, "holder": self.folder.holder(name)})
        for name in self.folder.names(CPU_RUN_PREFIX):
            if self.folder.is_held(name):
                report["cpu_runs"].append({"file": name, "holder": self.folder.holder(name)})
        return report

    def _slot_reports(self, gpu: GpuInfo) -> list[dict[str, Any]]:
        """Each slot of ``gpu``: held (and by whom), free, or blocked by junk. Slot files beyond
        ``slots_per_gpu`` (left by runs with more slots) are listed too, so no holder is hidden."""
        prefix = self.slot_name(gpu, 0).rsplit(".slot", 1)[0] + ".slot"
        suffixes = [n[len(prefix) : -len(".lock")] for n in self.folder.names(prefix)]
        present = [int(x) for x in suffixes if x.isdigit()]
        slots = []
        for slot in range(max([self.slots_per_gpu, *(k + 1 for k in present)])):
            name = self.slot_name(gpu, slot)
            held = self.folder.is_held(name)
            slots.append(
                {
                    "slot": slot,
                    "held": held,
                    "holder": self.folder.holder(name) if held else None,
                    "blocked": None if held else self.folder.junk(name),
                }
            )
        return slots
