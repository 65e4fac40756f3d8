"""Where chunk and metadata bytes go: a local directory (plain files) or s3:// (a zarr store).

Local writes are the fast path: each chunk goes to a temporary file renamed into place, so a chunk
file that exists is complete. s3:// goes through zarr's ``FsspecStore`` on s3fs (one PUT per key is
atomic there).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Protocol

from zarr.core.buffer import default_buffer_prototype
from zarr.core.buffer.cpu import Buffer as CpuBuffer
from zarr.core.sync import sync
from zarr.storage import FsspecStore

__all__ = ["ChunkSink", "LocalSink", "StoreSink"]


class ChunkSink(Protocol):
    def exists(self, key: str) -> bool: ...

    def read(self, key: str) -> bytes | None: ...

    def write(self, key: str, data: bytes) -> None: ...


class LocalSink:
    """A directory tree of plain files; every write is temp file + rename."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: set[Path] = set()
        self._lock = threading.Lock()

    def _dir(self, path: Path) -> None:
        parent = path.parent
        if parent in self._made:
            return
        parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self._made.add(parent)

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, key: str, data: bytes) -> None:
        path = self.root / key
        self._dir(path)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def remove(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self._made.clear()


class StoreSink:
    """An fsspec-backed zarr store (s3://); keys listed once so resuming costs no HEAD per chunk."""

    def __init__(self, store: FsspecStore) -> None:
        self.store = store
        self._keys: set[str] | None = None

    def _all_keys(self) -> set[str]:
        if self._keys is None:

            async def collect() -> set[str]:
                return {key async for key in self.store.list()}

            self._keys = sync(collect())
        return self._keys

    def exists(self, key: str) -> bool:
        return key in self._all_keys()

    def read(self, key: str) -> bytes | None:
        buffer = sync(self.store.get(key, prototype=default_buffer_prototype()))
        return None if buffer is None else buffer.to_bytes()

    def write(self, key: str, data: bytes) -> None:
        sync(self.store.set(key, CpuBuffer.from_bytes(data)))

    def remove(self, key: str) -> None:
        sync(self.store.delete(key))
        if self._keys is not None:
            self._keys.discard(key)

    def clear(self) -> None:
        sync(self.store.delete_dir(""))
        self._keys = set()
