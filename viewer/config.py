"""Server settings, read once from ``IAIN_*`` environment variables (or built in tests)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from viewer.errors import ConfigError

__all__ = ["ServerSettings"]

PREFIX = "IAIN_"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What ``create_app`` needs; every field maps to ``IAIN_<FIELD>``.

    ``data`` is a directory or an ``s3://bucket/prefix`` URL holding ``*.zarr`` pyramids.
    Computed tiles are cached in memory (``memory_cache_mb`` per worker) and on disk in
    ``cache_dir`` (shared by workers; default: a directory under the system temp dir).
    """

    data: str = "data"
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    cache_dir: str = ""
    memory_cache_mb: int = 256
    disk_cache_mb: int = 2048
    catalog_refresh_s: float = 10.0
    jpeg_quality: int = 85
    s3_endpoint_url: str = ""
    loop: str = "uvloop"  # "asyncio" too: uvicorn#3149 bites there, tests check the fix
    server: str = "granian"  # or "uvicorn"; granian is ~3x faster here (benchmarks/RESULTS.md)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} not in 1..65535")
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"workers {self.workers} not in 1..64")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality {self.jpeg_quality} not in 1..100")
        if self.memory_cache_mb < 0 or self.disk_cache_mb < 0 or self.catalog_refresh_s < 0:
            raise ConfigError("cache sizes and refresh interval must be >= 0")
        if self.loop not in ("uvloop", "asyncio"):
            raise ConfigError(f"loop {self.loop!r} is not uvloop or asyncio")
        if self.server not in ("granian", "uvicorn"):
            raise ConfigError(f"server {self.server!r} is not granian or uvicorn")
        if not self.data:
            raise ConfigError("data directory or URL is empty")

    @property
    def cache_path(self) -> Path | None:
        """Disk cache directory, None when the disk cache is off."""
        if self.disk_cache_mb == 0:
            return None
        if self.cache_dir:
            return Path(self.cache_dir)
        return Path(tempfile.gettempdir()) / "iain-tile-cache"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ServerSettings:
        """Settings from ``IAIN_*`` variables; unknown values keep their defaults."""
        values: dict[str, object] = {}
        for field in fields(cls):
            raw = environ.get(PREFIX + field.name.upper())
            if raw is None:
                continue
            kind = type(getattr(cls(), field.name))
            try:
                values[field.name] = kind(raw)
            except ValueError as exc:
                raise ConfigError(
                    f"{PREFIX}{field.name.upper()}={raw!r} is not a {kind.__name__}"
                ) from exc
        return cls(**values)  # type: ignore[arg-type]

    def to_env(self) -> dict[str, str]:
        """The inverse of :meth:`from_env`, for worker processes started by ``serve``."""
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    def with_(self, **changes: object) -> ServerSettings:
        return replace(self, **changes)  # type: ignore[arg-type]
