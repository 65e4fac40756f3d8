"""Settings of the share package (prefix ``SHARE_``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from share.client_address import Network, parse_networks
from share.errors import InvalidInputError

__all__ = ["DEFAULT_CENTRES", "ShareSettings"]

DEFAULT_CENTRES: tuple[str, ...] = ("caen", "rouen", "lille")


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidInputError(f"{name}={raw!r} is not an integer") from None


def _local_data(environ: Mapping[str, str]) -> str:
    # The database sits beside the pyramids when they are local (the catalogue ignores it).
    data = environ.get("IAIN_DATA", "data")
    return "data" if "://" in data else data


@dataclass(frozen=True)
class ShareSettings:
    """Accounts, sessions and audit settings.

    ``database_url`` defaults to a SQLite file under ``data_dir`` (WAL mode); any SQLAlchemy URL
    works, e.g. ``postgresql+psycopg://iain@/iain?host=/run/postgresql``.
    """

    data_dir: Path = Path("data")
    database_url: str = ""
    centres: tuple[str, ...] = DEFAULT_CENTRES
    default_centre: str = "caen"
    session_idle_s: int = 30 * 60
    session_absolute_s: int = 12 * 3600
    # Sessions are cached per process this long: revocation reaches other workers within it.
    session_cache_s: float = 2.0
    # last_seen_at is written at most this often (not once per tile).
    session_touch_s: int = 60
    secure_cookies: bool = False
    login_max_failures: int = 5
    login_window_s: int = 15 * 60
    # argon2id cost; tests lower it, production keeps argon2-cffi's RFC 9106 low-memory profile.
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 64 * 1024
    view_flush_s: float = 60.0
    # A single annotation past this many vertices is refused (4xx naming the feature).
    annotation_max_vertices: int = 100_000
    annotation_max_features: int = 2_000_000
    import_max_bytes: int = 1 << 30
    # OIDC (authorization code + PKCE); off unless an issuer is set.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    oidc_client_secret: str = ""
    oidc_redirect_uri: str = ""
    # Federation (off unless a peers file is set): owner routes /federation/* are then public
    # to the session middleware and authenticated by signed node tokens instead.
    federation_file: str = ""
    node_key_file: str = ""
    # Signed tile grants (share/tile_grants.py): tiles authorised by a short-lived signed
    # cookie that nginx (``iain nginx-conf``) or the tile fast path checks per request.
    tile_grants: bool = False
    tile_grant_ttl_s: int = 120
    # Reverse proxies whose X-Forwarded-For is believed (share/client_address.py); none by
    # default: the TCP peer is the client.
    trusted_proxies: tuple[str, ...] = ()
    public_paths: frozenset[str] = field(
        default_factory=lambda: frozenset({"/api/login", "/healthz", "/readyz", "/login"})
    )
    public_prefixes: tuple[str, ...] = ("/static/", "/api/oidc/")

    def __post_init__(self) -> None:
        if self.default_centre not in self.centres:
            raise InvalidInputError(
                f"default centre {self.default_centre!r} not in {', '.join(self.centres)}"
            )
        parse_networks(self.trusted_proxies)  # a bad entry is named at start-up

    @cached_property
    def trusted_networks(self) -> tuple[Network, ...]:
        return parse_networks(self.trusted_proxies)

    @property
    def url(self) -> str:
        """The database URL, defaulting to ``<data_dir>/iain.db``."""
        return self.database_url or f"sqlite:///{self.data_dir / 'iain.db'}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ShareSettings:
        """Build from ``SHARE_*`` variables (``SHARE_CENTRES=caen,rouen``)."""
        centres = tuple(
            c.strip() for c in environ.get("SHARE_CENTRES", ",".join(DEFAULT_CENTRES)).split(",")
        )
        return cls(
            data_dir=Path(environ.get("SHARE_DATA_DIR", _local_data(environ))),
            database_url=environ.get("SHARE_DATABASE_URL", ""),
            centres=tuple(c for c in centres if c),
            default_centre=environ.get("SHARE_DEFAULT_CENTRE", centres[0] if centres else ""),
            session_idle_s=_int(environ, "SHARE_SESSION_IDLE_S", 30 * 60),
            session_absolute_s=_int(environ, "SHARE_SESSION_ABSOLUTE_S", 12 * 3600),
            secure_cookies=environ.get("SHARE_SECURE_COOKIES", "0") in ("1", "true", "yes"),
            login_max_failures=_int(environ, "SHARE_LOGIN_MAX_FAILURES", 5),
            login_window_s=_int(environ, "SHARE_LOGIN_WINDOW_S", 15 * 60),
            argon2_time_cost=_int(environ, "SHARE_ARGON2_TIME_COST", 3),
            argon2_memory_kib=_int(environ, "SHARE_ARGON2_MEMORY_KIB", 64 * 1024),
            oidc_issuer=environ.get("SHARE_OIDC_ISSUER", ""),
            oidc_client_id=environ.get("SHARE_OIDC_CLIENT_ID", ""),
            oidc_client_secret=environ.get("SHARE_OIDC_CLIENT_SECRET", ""),
            oidc_redirect_uri=environ.get("SHARE_OIDC_REDIRECT_URI", ""),
            federation_file=environ.get("SHARE_FEDERATION_FILE", ""),
            node_key_file=environ.get("SHARE_NODE_KEY_FILE", ""),
            tile_grants=environ.get("SHARE_TILE_GRANTS", "0") in ("1", "true", "yes"),
            tile_grant_ttl_s=_int(environ, "SHARE_TILE_GRANT_TTL_S", 120),
            trusted_proxies=tuple(
                p.strip() for p in environ.get("SHARE_TRUSTED_PROXIES", "").split(",") if p.strip()
            ),
        )
