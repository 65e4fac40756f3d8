"""Where chunk and metadata bytes go: a local directory (plain files) or s3:// (a zarr store).

Local writes are the fast path: each chunk goes to a temporary file renamed into place, so a chunk
file that exists is complete. s3:// goes through zarr's ``FsspecStore`` on s3fs (one PUT per key is
atomic there).
"""

from __future__ import annotations

import os
import shutil
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
        self._root = str(root)

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, key: str, data: bytes) -> None:
        # one writer per key, so a per-thread temp name beside the target is unique enough;
        # plain os calls: this runs once per tile and mkstemp + fdopen cost twice as much
        path = os.path.join(self._root, key)
        tmp = f"{path}.tmp-{threading.get_ident()}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(tmp, flags, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)

    def remove(self, key: str) -> None:
        (self.root / key).unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


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
