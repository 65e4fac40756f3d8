"""Federation of centres: who the peers are, what a share is, and the owner-side share check.

Each centre runs one node. A node knows its peers from configuration only (name, base URL,
Ed25519 public key), read from a TOML or JSON file or the environment::

    node = "caen"
    [[peers]]
    name = "lille"
    url = "https://iain.chu-lille.example"
    public_key = '''-----BEGIN PUBLIC KEY----- ... -----END PUBLIC KEY-----'''

A :class:`Share` lives at the OWNER's node. Every request from a peer is re-checked against it
by :func:`authorize_share` (no decision is cached at the owner), and node tokens live at most
60 s, so revocation and expiry end access within 60 s at worst, immediately at the owner.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import os
import re
import secrets
import threading
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from share.deidentify import SharedRegion
from share.federation_errors import (
    PeerConfigError,
    ShareAccessError,
    ShareExpiredError,
    ShareNotFoundError,
    SharePermissionError,
    ShareRecipientError,
    ShareRevokedError,
)
from share.signing import load_public_key

if TYPE_CHECKING:  # the database layer is imported only where the audit trail is used
    from share.audit import ViewAggregator
    from share.db import Database

__all__ = [
    "MAX_ACCESS_LAG_S",
    "FederationAccess",
    "FederationAuditTrail",
    "FederationConfig",
    "JsonShareFile",
    "Peer",
    "Permission",
    "Recipient",
    "RecipientKind",
    "Share",
    "ShareRegistry",
    "authorize_share",
    "new_pseudonym",
    "new_share_id",
]

MAX_ACCESS_LAG_S = 60  # the promise: access ends at most this long after expiry or revocation
_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


@dataclass(frozen=True, slots=True)
class Peer:
    """Another centre's node: its name (``iss``/``aud`` of tokens), base URL and public key."""

    name: str
    url: str
    public_key: Ed25519PublicKey = field(repr=False)


@dataclass(frozen=True, slots=True)
class FederationConfig:
    """This node's name and its peers, by name."""

    node: str
    peers: Mapping[str, Peer]

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """The ``peers`` argument of :func:`share.signing.verify_request`."""
        return {name: peer.public_key for name, peer in self.peers.items()}

    def peer(self, name: str) -> Peer:
        try:
            return self.peers[name]
        except KeyError as exc:
            raise PeerConfigError(f"no peer named {name!r} is configured") from exc

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "config") -> FederationConfig:
        """Validate a parsed config: names, URLs (https, or http on loopback), keys."""
        node = data.get("node")
        if not isinstance(node, str) or not _NAME.fullmatch(node):
            raise PeerConfigError(f"{source}: 'node' must be a short lower-case name")
        raw = data.get("peers", [])
        if not isinstance(raw, list):
            raise PeerConfigError(f"{source}: 'peers' must be a list")
        peers: dict[str, Peer] = {}
        for index, item in enumerate(raw):
            peer = _parse_peer(item, f"{source}: peers[{index}]")
            if peer.name == node or peer.name in peers:
                raise PeerConfigError(f"{source}: peer name {peer.name!r} is used twice")
            peers[peer.name] = peer
        return cls(node=node, peers=peers)

    @classmethod
    def from_file(cls, path: Path | str) -> FederationConfig:
        """Read ``*.toml`` or ``*.json``."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
            data = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
        except OSError as exc:
            raise PeerConfigError(f"cannot read peers file {file.name}: {exc.strerror}") from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise PeerConfigError(f"peers file {file.name} is not valid: {exc}") from exc
        if not isinstance(data, dict):
            raise PeerConfigError(f"peers file {file.name} must hold an object")
        return cls.from_mapping(data, source=file.name)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FederationConfig:
        """``SHARE_FEDERATION_FILE`` (path), else ``SHARE_FEDERATION_JSON`` (inline JSON)."""
        env = os.environ if environ is None else environ
        if env.get("SHARE_FEDERATION_FILE"):
            return cls.from_file(env["SHARE_FEDERATION_FILE"])
        if env.get("SHARE_FEDERATION_JSON"):
            try:
                data = json.loads(env["SHARE_FEDERATION_JSON"])
            except ValueError as exc:
                raise PeerConfigError(f"SHARE_FEDERATION_JSON is not JSON: {exc}") from exc
            if not isinstance(data, dict):
                raise PeerConfigError("SHARE_FEDERATION_JSON must hold an object")
            return cls.from_mapping(data, source="SHARE_FEDERATION_JSON")
        raise PeerConfigError("set SHARE_FEDERATION_FILE or SHARE_FEDERATION_JSON")


def _parse_peer(item: object, where: str) -> Peer:
    if not isinstance(item, dict):
        raise PeerConfigError(f"{where} must be a table/object")
    name, url, key = item.get("name"), item.get("url"), item.get("public_key")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PeerConfigError(f"{where}: 'name' must be a short lower-case name")
    if not isinstance(url, str):
        raise PeerConfigError(f"peer {name}: 'url' is missing")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise PeerConfigError(f"peer {name}: url must be http(s)://host[:port]")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise PeerConfigError(f"peer {name}: plain http is allowed on loopback only; use https")
    if parts.query or parts.fragment or parts.username:
        raise PeerConfigError(f"peer {name}: url must not carry query, fragment or credentials")
    if not isinstance(key, str | dict):
        raise PeerConfigError(f"peer {name}: 'public_key' (PEM or JWK) is missing")
    try:
        public_key = load_public_key(key)
    except ValueError as exc:
        raise PeerConfigError(f"peer {name}: {exc}") from exc
    return Peer(name=name, url=url.rstrip("/"), public_key=public_key)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Permission(enum.StrEnum):
    VIEW = "view"
    ANNOTATE = "annotate"


class RecipientKind(enum.StrEnum):
    USER = "user"
    GROUP = "group"


@dataclass(frozen=True, slots=True)
class Recipient:
    """A named colleague or a group, at a given (other) centre."""

    kind: RecipientKind
    centre: str
    name: str


@dataclass(frozen=True, slots=True)
class Share:
    """One slide shared by its owner centre; held (and checked) at the owner's node.

    ``pseudonym`` is the only name the recipient ever sees; ``slide_id`` stays home.
    Times are timezone-aware UTC.
    """

    share_id: str
    owner_centre: str
    slide_id: str
    recipient: Recipient
    permission: Permission
    expires_at: datetime
    pseudonym: str
    note: str = ""
    revoked_at: datetime | None = None
    created_at: datetime | None = None
    region: SharedRegion | None = None  # level-0 pixels; None = the whole slide

    def revoke(self, now: datetime) -> Share:
        return self if self.revoked_at is not None else replace(self, revoked_at=now)

    def to_json(self) -> dict[str, Any]:
        return {
            "share_id": self.share_id,
            "owner_centre": self.owner_centre,
            "slide_id": self.slide_id,
            "recipient": {
                "kind": self.recipient.kind.value,
                "centre": self.recipient.centre,
                "name": self.recipient.name,
            },
            "permission": self.permission.value,
            "expires_at": self.expires_at.isoformat(),
            "pseudonym": self.pseudonym,
            "note": self.note,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "region": self.region.as_list() if self.region else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Share:
        recipient = data["recipient"]
        return cls(
            share_id=str(data["share_id"]),
            owner_centre=str(data["owner_centre"]),
            slide_id=str(data["slide_id"]),
            recipient=Recipient(
                RecipientKind(recipient["kind"]), str(recipient["centre"]), str(recipient["name"])
            ),
            permission=Permission(data["permission"]),
            expires_at=_utc(data["expires_at"]),
            pseudonym=str(data["pseudonym"]),
            note=str(data.get("note", "")),
            revoked_at=_utc(data["revoked_at"]) if data.get("revoked_at") else None,
            created_at=_utc(data["created_at"]) if data.get("created_at") else None,
            region=SharedRegion(*map(int, data["region"])) if data.get("region") else None,
        )


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no timezone")
    return value.astimezone(UTC)


def new_share_id() -> str:
    """Opaque, unguessable (128 bits): knowing a share id is not a way in, but it helps."""
    return secrets.token_urlsafe(16)


def new_pseudonym() -> str:
    """The slide's name for ONE share: random, so two shares of a slide cannot be linked."""
    return f"SHR-{secrets.token_hex(6)}"


def authorize_share(
    share: Share | None,
    claims: Mapping[str, Any],
    now: datetime,
    *,
    action: Permission = Permission.VIEW,
) -> Share:
    """Owner-side decision for a verified peer request (``claims`` from ``verify_request``).

    The caller is ``claims["sub"]`` at node ``claims["iss"]``; group membership is what the
    recipient's node asserts in ``claims["groups"]``. Returns the share or raises a
    :class:`ShareAccessError` subclass; the HTTP edge answers all of them with the same 404.
    """
    if share is None:
        raise ShareNotFoundError("no such share")
    if share.revoked_at is not None and share.revoked_at <= now:
        raise ShareRevokedError(f"share {share.share_id} was revoked")
    if share.expires_at <= now:
        raise ShareExpiredError(f"share {share.share_id} expired")
    recipient = share.recipient
    if claims.get("iss") != recipient.centre:
        raise ShareRecipientError(f"share {share.share_id} is not for centre {claims.get('iss')}")
    if recipient.kind is RecipientKind.USER:
        allowed = claims.get("sub") == recipient.name
    else:
        groups = claims.get("groups")
        allowed = isinstance(groups, list) and recipient.name in groups
    if not allowed:
        raise ShareRecipientError(f"share {share.share_id} is not for this user")
    if action is Permission.ANNOTATE and share.permission is not Permission.ANNOTATE:
        raise SharePermissionError(f"share {share.share_id} is view-only")
    return share


@dataclass(frozen=True, slots=True)
class FederationAccess:
    """One decided peer request at the owner's node: what the audit trail records."""

    at: datetime
    peer: str  # the calling node
    subject: str  # its user
    share_id: str  # "*" for the share list
    action: str  # "list" | "info" | "tile"
    allowed: bool
    reason: str  # the refusal's error code; "" when allowed
    slide_id: str | None = None  # None when the share is unknown
    owner_centre: str | None = None
    tile: tuple[int, int, int] | None = None  # (level, col, row)


class FederationAuditTrail:
    """Owner-side audit of peer requests into the hash-chained audit trail (``share.audit``).

    Granted tile reads go through the :class:`~share.audit.ViewAggregator` (one record per
    peer user and share with the regions seen, like local views); everything else (lists,
    info, every refusal) is one record per request. Actor is ``user@centre``.
    """

    def __init__(self, db: Database, aggregator: ViewAggregator | None = None) -> None:
        self._db = db
        self._aggregator = aggregator

    def __call__(self, access: FederationAccess) -> None:
        actor = f"{access.subject}@{access.peer}"[:150]
        if access.allowed and access.tile is not None and self._aggregator is not None:
            level, col, row = access.tile
            self._aggregator.record(
                f"peer:{access.peer}:{access.share_id}",
                actor,
                access.owner_centre or "",
                access.slide_id or "",
                str(level),
                col,
                row,
            )
            return
        from share import audit  # lazy: a node without the database never loads SQLAlchemy

        detail: dict[str, Any] = {"peer": access.peer, "share": access.share_id[:64]}
        if access.tile is not None:
            detail["tile"] = list(access.tile)
        if access.reason:
            detail["reason"] = access.reason
        with self._db.session() as session:
            audit.append(
                session,
                actor=actor,
                action=f"federation.{access.action}",
                outcome="ok" if access.allowed else "denied",
                centre_id=access.owner_centre,
                slide_id=access.slide_id,
                detail=detail,
            )


class ShareRegistry(Protocol):
    """Where the owner node keeps its shares (the database in production)."""

    def get(self, share_id: str) -> Share | None: ...

    def for_recipient(self, centre: str, user: str, groups: Sequence[str]) -> list[Share]: ...


class JsonShareFile:
    """Shares in one JSON file, re-read when it changes: for demos and tests without a database.

    Writes are atomic (temp file + rename) so a reader never sees half a file.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._shares: dict[str, Share] = {}

    def _load(self) -> dict[str, Share]:
        with self._lock:
            try:
                stat = self.path.stat()
            except FileNotFoundError:
                self._stamp, self._shares = None, {}
                return self._shares
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp != self._stamp:
                items = json.loads(self.path.read_text(encoding="utf-8"))
                self._shares = {s.share_id: s for s in map(Share.from_json, items)}
                self._stamp = stamp
            return self._shares

    def get(self, share_id: str) -> Share | None:
        return self._load().get(share_id)

    def for_recipient(self, centre: str, user: str, groups: Sequence[str]) -> list[Share]:
        claims = {"iss": centre, "sub": user, "groups": list(groups)}
        now = datetime.now(UTC)
        found = []
        for share in self._load().values():
            try:
                found.append(authorize_share(share, claims, now))
            except ShareAccessError:  # expired, revoked, someone else's: not listed
                continue
        return found

    def save(self, shares: Sequence[Share]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        tmp.write_text(json.dumps([share.to_json() for share in shares], indent=1))
        os.replace(tmp, self.path)
