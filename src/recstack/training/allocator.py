"""Keep freed memory in the process heap during CPU training (glibc only).

A training step allocates and frees the same large activations every step. glibc returns a
freed block above its mmap threshold to the OS at once, and shrinks the heap past its trim
threshold, so the next step's allocation of the same size page-faults its memory in again:
DIN's attention unit (40,000 x 80 float32 activations, 12.8 MB each) spent about half of its
Dice time there. Raising both thresholds keeps that memory mapped and reused, as the
jemalloc/tcmalloc preload that PyTorch's CPU tuning guide recommends does, without a preload.
Measured with ``benchmarks/cpu_kernels.py``; figures in ``docs/benchmarks.md``.

The cost: memory freed below 32 MB per block stays with the process (resident at its peak)
until it exits. Peak RSS is what bounds a run, and it does not change.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["keep_freed_memory"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's largest accepted value on 64-bit
TRIM_THRESHOLD_BYTES = 2**31 - 1  # mallopt takes a C int

_applied = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when they were set.

    Idempotent; a no-op (False) off Linux or with another C library (musl, macOS).
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success; musl has no mallopt symbol with these semantics (caught above)
    ok = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and ok
    if ok:
        _applied = True
        log.debug("glibc malloc: mmap threshold %d, trim threshold %d", MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES)
    return ok
