"""CPU runs keep freed memory in the process heap, so a steady training loop stops faulting pages in.

With glibc's defaults, every step of a conv or LSTM network hands its freed activations back to the
OS (heap trimming, and mmap for large blocks) and faults them in again at the next step: on this
platform's CPU cases that was 13-20 % of an epoch, for any training loop (bench/bench_peers.py,
bench/README.md). ``mallopt`` with no trimming below 1 GiB and no mmap below 32 MiB (the largest
threshold glibc takes) keeps them; the heap then stays at the run's peak, which the loop reaches at
every step anyway. Other C libraries (musl, macOS) are left as they are.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
TRIM_THRESHOLD = 1 << 30
MMAP_THRESHOLD = 32 << 20


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory for reuse; False where the C library has no ``mallopt``."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) and mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    )
