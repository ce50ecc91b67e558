"""Numeric precision, decided once per run from ``train_args.mixed_precision`` and the device.

``auto`` is bf16 autocast on a GPU that supports it, else fp16 with a GradScaler (fp16's narrow
range lets small gradients underflow to zero without one); on a CPU it is float32 unless bf16 is
asked for by name.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    device_type: str
    dtype: torch.dtype | None  # the autocast dtype; None: plain float32
    scaled: bool  # fp16 on CUDA: losses are scaled, and steps with inf gradients skipped

    @classmethod
    def choose(cls, mode: str, device: torch.device) -> Precision:
        if device.type != "cuda":
            return cls(device.type, torch.bfloat16 if mode == "bf16" else None, False)
        if mode == "off":
            return cls("cuda", None, False)
        if mode == "fp16" or (mode == "auto" and not torch.cuda.is_bf16_supported()):
            return cls("cuda", torch.float16, True)
        return cls("cuda", torch.bfloat16, False)

    def autocast(self) -> AbstractContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)
