"""Pick the device for a run from ``--gpu``: an index, -1 for any free GPU, or the CPU.

With no NVIDIA driver or no CUDA build of torch the run goes on the CPU after one notice.
"""

from __future__ import annotations

import sys

from text_recognizer.errors import UserError


def select_device(gpu: int | None) -> str:
    """Return a torch device string. ``gpu`` None means CPU; -1 means the first available GPU."""
    if gpu is None:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        print(
            "notice: no GPU available (no NVIDIA driver or a CPU build of torch); running on the CPU",
            file=sys.stderr,
        )
        return "cpu"
    count = torch.cuda.device_count()
    if gpu == -1:
        return "cuda:0"
    if not 0 <= gpu < count:
        raise UserError(
            f"--gpu={gpu} does not exist; this machine has GPUs 0..{count - 1} (or -1 for any)"
        )
    return f"cuda:{gpu}"
