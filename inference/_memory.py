"""Keep the heap from creeping and the model from page-faulting: one fixed malloc policy.

glibc raises its mmap threshold each time a large block is freed (up to 32 MiB), so tensors
move between mmap and the heap as a run goes on, the heap fragments between threads and RSS grew
with the units processed. A threshold pinned at 1 MiB kept RSS flat but made every activation
tensor of every forward pass a fresh mmap: ~100k page faults per batch, system time above user
time, the model 2.5-3.5x slower on CPU. Pinning it at 256 MiB instead (and the trim threshold
above it) keeps tensors of every size in the heap, where freed blocks are reused by the next
batch: no faults, and RSS still flat (peak 823 vs 849 MiB over 0.4 vs 1.6 gigapixels, the
whole pipeline, benchmarks/RESULTS.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["pin_mmap_threshold"]

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def pin_mmap_threshold(nbytes: int = 256 << 20) -> bool:
    """Once per process, on glibc; False (and no change) elsewhere. Blocks under ``nbytes``
    come from the heap; the heap is trimmed only above ``2 * nbytes`` free at its top."""
    global _done
    if _done:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        ok = libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, nbytes))
        ok = ok and libc is not None and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 * nbytes))
    except (OSError, AttributeError):
        ok = False
    _done = ok
    logger.debug("mmap threshold pinned: %s", ok)
    return ok
