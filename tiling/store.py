"""Raw key/value access to pyramid stores, local or remote (s3://, any fsspec URL).

The tile server reads chunk files as opaque bytes (a chunk is a complete JPEG), so it talks
to storage directly instead of through zarr's async ``Store``: a local read is one
``open``/``read`` in the calling thread, a remote one a blocking fsspec call made from the
threadpool. Keys are zarr store keys (``0/c/0/3/7``); callers build them from integers or
validate them first, this module never resolves ``..``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import fsspec

__all__ = ["FsspecPyramidStore", "LocalPyramidStore", "PyramidStore", "open_data_root"]

logger = logging.getLogger(__name__)


class PyramidStore(Protocol):
    """A directory-like store: one pyramid, or the data root holding many."""

    @property
    def local_root(self) -> str | None:
        """The directory on this machine when reads can bypass fsspec, else None."""
        ...

    def get(self, key: str) -> bytes | None:
        """The bytes stored under ``key``, or None when there is no such key."""
        ...

    def list_pyramids(self) -> list[str]:
        """Names of the ``*.zarr`` children (sorted)."""
        ...

    def child(self, name: str) -> PyramidStore: ...

    def describe(self) -> str:
        """Where this store lives, for log lines (never sent to clients)."""
        ...


@dataclass(frozen=True, slots=True)
class LocalPyramidStore:
    root: str

    @property
    def local_root(self) -> str | None:
        return self.root

    def get(self, key: str) -> bytes | None:
        try:
            fd = os.open(os.path.join(self.root, key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:  # 3 syscalls; FileIO.readall costs twice as many
            size = os.fstat(fd).st_size
            data = os.read(fd, size)
            while len(data) < size:  # a short read (rare): go on
                more = os.read(fd, size - len(data))
                if not more:
                    break
                data += more
            return data
        except IsADirectoryError:
            return None
        finally:
            os.close(fd)

    def list_pyramids(self) -> list[str]:
        try:
            entries = sorted(os.scandir(self.root), key=lambda entry: entry.name)
        except FileNotFoundError:
            return []
        return [e.name for e in entries if e.name.endswith(".zarr") and e.is_dir()]

    def child(self, name: str) -> LocalPyramidStore:
        return LocalPyramidStore(os.path.join(self.root, name))

    def describe(self) -> str:
        return self.root


@dataclass(frozen=True, slots=True)
class FsspecPyramidStore:
    fs: Any  # fsspec.AbstractFileSystem (untyped upstream)
    root: str  # path inside ``fs``, no protocol, no trailing slash

    @property
    def local_root(self) -> str | None:
        return None

    def get(self, key: str) -> bytes | None:
        try:
            data: bytes = self.fs.cat_file(f"{self.root}/{key}")
        except (FileNotFoundError, IsADirectoryError):
            return None
        return data

    def list_pyramids(self) -> list[str]:
        try:
            self.fs.invalidate_cache(self.root)
            entries = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return []
        names = [
            str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
            for entry in entries
            if entry.get("type") == "directory"
        ]
        return sorted(name for name in names if name.endswith(".zarr"))

    def child(self, name: str) -> FsspecPyramidStore:
        return FsspecPyramidStore(self.fs, f"{self.root}/{name}")

    def describe(self) -> str:
        protocol = self.fs.protocol
        scheme = protocol[0] if isinstance(protocol, tuple | list) else protocol
        return f"{scheme}://{self.root}"


def open_data_root(url: str, s3_endpoint_url: str | None = None) -> PyramidStore:
    """The store for ``--data``: a local directory or an fsspec URL such as ``s3://bucket/dir``."""
    if "://" not in url or url.startswith("file://"):
        path = url.removeprefix("file://")
        return LocalPyramidStore(str(Path(path).resolve()))
    protocol, _, rest = url.partition("://")
    options: dict[str, Any] = {}
    if protocol == "s3" and s3_endpoint_url:
        options["endpoint_url"] = s3_endpoint_url
    fs = fsspec.filesystem(protocol, **options)
    logger.info("data root on %s", protocol)
    return FsspecPyramidStore(fs, rest.rstrip("/"))
