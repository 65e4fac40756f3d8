"""Bounded caches for computed tiles: an in-memory LRU in front of a disk directory.

Keys are content keys (a hash of the pyramid id and the request that produced the bytes),
so the disk cache can be shared by every worker and needs no invalidation: a rebuilt
pyramid has a new id, hence new keys. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

__all__ = ["DiskCache", "MemoryCache", "TileCache"]

logger = logging.getLogger(__name__)


class MemoryCache:
    """LRU of bytes bounded by their total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._items[key] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted)

    @property
    def size_bytes(self) -> int:
        return self._size


class DiskCache:
    """Files ``DIR/ab/abcdef...`` bounded by total size; the oldest files go first."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._size = sum(p.stat().st_size for p in directory.glob("*/*") if p.is_file())
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        path = self._path(key)
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            logger.warning("disk cache write failed in %s", self.directory, exc_info=True)
            return
        with self._lock:
            self._size += len(data)
            if self._size > self.max_bytes:
                self._evict()

    def _evict(self) -> None:
        """Delete the oldest files until the cache is at 3/4 of its bound."""
        files = []
        for p in self.directory.glob("*/*"):
            try:
                files.append((p.stat().st_mtime, p.stat().st_size, p))
            except FileNotFoundError:
                continue
        files.sort()
        total = sum(size for _, size, _ in files)
        for _, size, p in files:
            if total <= self.max_bytes * 3 // 4:
                break
            p.unlink(missing_ok=True)
            total -= size
        self._size = total

    @property
    def size_bytes(self) -> int:
        return self._size


class TileCache:
    """Memory first, then disk (when configured); a disk hit is promoted to memory."""

    def __init__(self, memory: MemoryCache, disk: DiskCache | None) -> None:
        self.memory = memory
        self.disk = disk

    def get(self, key: str) -> bytes | None:
        data = self.memory.get(key)
        if data is None and self.disk is not None:
            data = self.disk.get(key)
            if data is not None:
                self.memory.put(key, data)
        return data

    def put(self, key: str, data: bytes) -> None:
        self.memory.put(key, data)
        if self.disk is not None:
            self.disk.put(key, data)
