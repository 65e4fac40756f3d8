"""CPU-side helpers of the engine: who gets the cores, reused buffers, a cheap argmax.

On a CPU device the model is the cost and torch's intra-op threads already fill every core.
The engine's default there runs reading and writing between forward passes (``lockstep``);
with the ``threads`` schedule, the reader, decoder and writer threads run at the lowest
priority so they take the gaps between and inside forward passes (a contended OpenMP barrier
costs far more than the work that contended it).

Large per-unit tensors come from a :class:`BufferPool`: allocated once per shape, they never
go back to the allocator between units (no page faults, no heap churn across threads).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["BufferPool", "argmax_first", "argmax_first_tensor", "lower_thread_priority"]

logger = logging.getLogger(__name__)

_LOWEST = 19


def lower_thread_priority() -> bool:
    """Give the calling thread the lowest CPU priority (Linux threads have their own nice
    value); False where that is not possible. Never raises: priority is an optimisation."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _LOWEST)
    except (AttributeError, OSError) as exc:
        logger.debug("thread priority unchanged: %s", exc)
        return False
    return True


class BufferPool:
    """Tensors handed out by shape and returned when done; thread-safe."""

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float32) -> None:
        self.device = device
        self.dtype = dtype
        self._free: defaultdict[tuple[int, ...], list[torch.Tensor]] = defaultdict(list)
        self._lock = threading.Lock()

    def take(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A tensor of ``shape`` with undefined contents."""
        with self._lock:
            free = self._free[shape]
            if free:
                return free.pop()
        return torch.empty(shape, dtype=self.dtype, device=self.device)

    def give(self, tensor: torch.Tensor) -> None:
        with self._lock:
            self._free[tuple(tensor.shape)].append(tensor)


def argmax_first(values: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """argmax over axis 0 of (classes, y, x), the first class winning ties, as uint8.

    numpy's and torch's argmax along the outer axis of a C-ordered array walk it with a stride
    and take 10x longer than these few whole-plane passes.
    """
    best = values[0].copy()
    index = np.zeros(best.shape, dtype=np.uint8)
    for c in range(1, values.shape[0]):
        better = values[c] > best
        index[better] = c
        if c + 1 < values.shape[0]:
            np.maximum(best, values[c], out=best)
    return index


def argmax_first_tensor(values: torch.Tensor) -> torch.Tensor:
    """:func:`argmax_first` on a tensor of any device (the device path's reduction): torch's
    own argmax over the outer axis took 0.19 s per 3 x 1024 x 1024 unit on CPU."""
    best = values[0].clone()
    index = torch.zeros(best.shape, dtype=torch.uint8, device=values.device)
    for c in range(1, values.shape[0]):
        index.masked_fill_(values[c] > best, c)
        if c + 1 < values.shape[0]:
            torch.maximum(best, values[c], out=best)
    return index
