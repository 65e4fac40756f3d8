"""Keep a long run's heap from creeping: large buffers go straight back to the OS.

glibc raises its mmap threshold each time a large block is freed, after which multi-megabyte
tensors come from the heap, where frees from other threads fragment it and RSS grows with the
number of work units processed. Pinning the threshold (M_MMAP_THRESHOLD) keeps every block above
1 MiB mmapped, so peak RSS is set by what is in flight, not by the slide's size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

__all__ = ["pin_mmap_threshold"]

logger = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
_done = False


def pin_mmap_threshold(nbytes: int = 1 << 20) -> bool:
    """Once per process, on glibc; False (and no change) elsewhere."""
    global _done
    if _done:
        return True
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        ok = bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, nbytes))
    except (OSError, AttributeError):
        ok = False
    _done = ok
    logger.debug("mmap threshold pinned: %s", ok)
    return ok
