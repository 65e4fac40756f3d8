"""The ``PeerClient`` seam: a remote hospital's node, as the recipient's node sees it.

The recipient's node calls the owner's node on behalf of one of its users; the owner decides.
:class:`HttpPeerClient` is the real client: httpx, every request signed for exactly that method,
path, audience and user (:mod:`share.signing`), bounded timeouts, bounded tile size, no
redirects. :class:`CachingPeerClient` wraps any client with a memory-only tile cache.
The owner's side of the wire is :mod:`share.federation_router`::

    GET /federation/shares                                   -> [SharedSlide]
    GET /federation/shares/{share_id}                        -> SharedPyramidInfo
    GET /federation/shares/{share_id}/tiles/{level}/{col}_{row}.jpeg  -> JPEG bytes
    POST /federation/revocations  {"share_ids": [...]}        -> {"purged": n}  (owner -> recipient)

:meth:`HttpPeerClient.call_json` signs any other JSON call (second opinions, annotations of a
shared slide: :mod:`share.federation_opinions_router`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx

from share.deidentify import SharedPyramidInfo, SharedRegion
from share.federation import Peer, Permission
from share.federation_errors import (
    PeerConflictError,
    PeerInputError,
    PeerNotFoundError,
    PeerProtocolError,
    PeerRejectedError,
    PeerUnavailableError,
)
from share.signing import NodeKey, sign_request

__all__ = [
    "FEDERATION_PREFIX",
    "MAX_JSON_BYTES",
    "MAX_TILE_BYTES",
    "NODE_SUBJECT",
    "CachingPeerClient",
    "Caller",
    "HttpPeerClient",
    "OpinionNotice",
    "PeerClient",
    "SharedSlide",
]

logger = logging.getLogger(__name__)

FEDERATION_PREFIX = "/federation"
MAX_TILE_BYTES = 4 * 1024 * 1024  # a 256-1024 px JPEG is far below; more is a broken peer
MAX_JSON_BYTES = 8 * 1024 * 1024  # share lists and slide info
NODE_SUBJECT = "node"  # the ``sub`` of requests a node makes for itself (not for a user)


@dataclass(frozen=True, slots=True)
class Caller:
    """The user at THIS node on whose behalf a peer is asked, and the groups they belong to."""

    user: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SharedSlide:
    """One entry of "shared with me", as the owner describes it (pseudonym, never the slide)."""

    share_id: str
    owner_centre: str
    pseudonym: str
    permission: Permission
    expires_at: datetime
    note: str


@dataclass(frozen=True, slots=True)
class OpinionNotice:
    """What the requester's node tells the consultant's about a request: ids and pseudonyms only.

    ``username`` is the consultant at their centre ("" = the centre's pool); ``kind`` is what
    happened: ``requested`` (sent to them) or ``reminder`` (overdue).
    """

    opinion_id: int
    kind: str
    centre: str
    username: str
    pseudonyms: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "opinion_id": self.opinion_id,
            "kind": self.kind,
            "consultant": {"centre": self.centre, "username": self.username or None},
            "pseudonyms": list(self.pseudonyms),
        }


class PeerClient(Protocol):
    """A remote hospital's node."""

    @property
    def peer_name(self) -> str: ...

    def list_shared(self, caller: Caller) -> list[SharedSlide]: ...

    def slide_info(self, share_id: str, caller: Caller) -> SharedPyramidInfo: ...

    def read_tile(self, share_id: str, level: int, col: int, row: int, caller: Caller) -> bytes: ...

    def notify_revoked(self, share_ids: Sequence[str]) -> int:
        """Owner side: tell this peer that our shares ended, so it drops what it cached."""
        ...

    def send_opinion_notice(self, notice: OpinionNotice) -> int:
        """Owner side: tell the consultant's node (e.g. a reminder); returns how many it told."""
        ...

    def call_json(
        self, method: str, route: str, caller: Caller, payload: object | None = None
    ) -> Any:
        """``method /federation{route}`` signed for ``caller`` (body bound); the JSON answer."""
        ...

    def purge(self, share_id: str) -> int:
        """Recipient side: drop anything kept of ``share_id``; returns how many items."""
        ...

    def close(self) -> None: ...


class HttpPeerClient:
    """:class:`PeerClient` over HTTP(S); one per peer, thread-safe (httpx connection pool)."""

    def __init__(
        self,
        key: NodeKey,
        peer: Peer,
        *,
        timeout_s: float = 5.0,
        connect_timeout_s: float = 2.0,
        max_tile_bytes: int = MAX_TILE_BYTES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._key = key
        self._peer = peer
        self._prefix = urlsplit(peer.url).path.rstrip("/")
        self._max_tile_bytes = max_tile_bytes
        self._client = httpx.Client(
            base_url=peer.url,
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            follow_redirects=False,
            trust_env=False,  # never route a hospital's signed requests through an env proxy
            transport=transport,
        )

    @property
    def peer_name(self) -> str:
        return self._peer.name

    def list_shared(self, caller: Caller) -> list[SharedSlide]:
        data = self._get_json("/shares", caller)
        if not isinstance(data, list):
            raise PeerProtocolError(f"{self._peer.name}: share list is not a list")
        try:
            return [
                SharedSlide(
                    share_id=str(item["share_id"]),
                    owner_centre=str(item["owner_centre"]),
                    pseudonym=str(item["pseudonym"]),
                    permission=Permission(item["permission"]),
                    expires_at=datetime.fromisoformat(item["expires_at"]),
                    note=str(item.get("note", "")),
                )
                for item in data
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise PeerProtocolError(f"{self._peer.name}: bad share list entry ({exc})") from exc

    def slide_info(self, share_id: str, caller: Caller) -> SharedPyramidInfo:
        data = self._get_json(f"/shares/{quote(share_id, safe='')}", caller)
        try:
            return SharedPyramidInfo(
                pseudonym=str(data["pseudonym"]),
                width=int(data["width"]),
                height=int(data["height"]),
                tile_width=int(data["tile_width"]),
                tile_height=int(data["tile_height"]),
                level_count=int(data["level_count"]),
                mpp_x=_opt_float(data.get("mpp_x")),
                mpp_y=_opt_float(data.get("mpp_y")),
                objective_power=_opt_float(data.get("objective_power")),
                region=SharedRegion(*map(int, data["region"])) if data.get("region") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:  # InvalidRegionError is a ValueError
            raise PeerProtocolError(f"{self._peer.name}: bad slide info ({exc})") from exc

    def read_tile(self, share_id: str, level: int, col: int, row: int, caller: Caller) -> bytes:
        route = f"/shares/{quote(share_id, safe='')}/tiles/{int(level)}/{int(col)}_{int(row)}.jpeg"
        response = self._send(route, caller)
        try:
            if response.headers.get("content-type", "").split(";")[0] != "image/jpeg":
                raise PeerProtocolError(f"{self._peer.name}: tile is not image/jpeg")
            declared = int(response.headers.get("content-length", "0") or 0)
            if declared > self._max_tile_bytes:
                raise PeerProtocolError(f"{self._peer.name}: tile of {declared} bytes refused")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self._max_tile_bytes:
                    raise PeerProtocolError(f"{self._peer.name}: tile over {size} bytes refused")
                chunks.append(chunk)
            return b"".join(chunks)
        except httpx.HTTPError as exc:
            raise PeerUnavailableError(f"{self._peer.name}: tile transfer failed ({exc})") from exc
        finally:
            response.close()

    def notify_revoked(self, share_ids: Sequence[str]) -> int:
        """POST the ended share ids (signed, body-bound) to the peer; returns what it purged."""
        body = json.dumps({"share_ids": list(share_ids)}).encode()
        response = self._send("/revocations", Caller(NODE_SUBJECT), method="POST", body=body)
        try:
            response.read()
            purged = response.json().get("purged")
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            raise PeerProtocolError(f"{self._peer.name}: bad revocation answer") from exc
        finally:
            response.close()
        if not isinstance(purged, int):
            raise PeerProtocolError(f"{self._peer.name}: bad revocation answer")
        return purged

    def send_opinion_notice(self, notice: OpinionNotice) -> int:
        """POST the notice (signed by this node, body-bound); the peer answers how many it told."""
        answer = self.call_json("POST", "/opinion-notices", Caller(NODE_SUBJECT), notice.as_json())
        notified = answer.get("notified") if isinstance(answer, dict) else None
        if not isinstance(notified, int):
            raise PeerProtocolError(f"{self._peer.name}: bad notice answer")
        return notified

    def call_json(
        self, method: str, route: str, caller: Caller, payload: object | None = None
    ) -> Any:
        body = None if payload is None else json.dumps(payload).encode()
        response = self._send(route, caller, method=method.upper(), body=body)
        return self._read_json(response)

    def purge(self, share_id: str) -> int:
        return 0  # nothing is kept here

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpPeerClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _get_json(self, route: str, caller: Caller) -> Any:
        return self._read_json(self._send(route, caller))

    def _read_json(self, response: httpx.Response) -> Any:
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_JSON_BYTES:
                    raise PeerProtocolError(f"{self._peer.name}: answer over {MAX_JSON_BYTES} B")
            return json.loads(body)
        except httpx.HTTPError as exc:
            raise PeerUnavailableError(f"{self._peer.name}: transfer failed ({exc})") from exc
        except ValueError as exc:
            raise PeerProtocolError(f"{self._peer.name}: answer is not JSON") from exc
        finally:
            response.close()

    def _send(
        self, route: str, caller: Caller, *, method: str = "GET", body: bytes | None = None
    ) -> httpx.Response:
        """``method FEDERATION_PREFIX + route`` signed for ``caller``; the response stays open."""
        target = f"{self._prefix}{FEDERATION_PREFIX}{route}"
        token = sign_request(
            self._key,
            method,
            target,
            self._peer.name,
            caller.user,
            {"groups": list(caller.groups)} if caller.groups else None,
            body=body,
        )
        headers = {"Authorization": f"Bearer {token}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = self._client.build_request(
            method, f"{FEDERATION_PREFIX}{route}", headers=headers, content=body
        )
        try:
            response = self._client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise PeerUnavailableError(f"{self._peer.name}: timed out") from exc
        except httpx.HTTPError as exc:
            raise PeerUnavailableError(f"{self._peer.name}: unreachable ({exc})") from exc
        if response.status_code in (200, 201):  # 201: an annotation created at the owner
            return response
        code = _error_code(response)
        response.close()
        logger.info("peer %s answered %d (%s)", self._peer.name, response.status_code, code)
        if response.status_code == 404:
            raise PeerNotFoundError(f"{self._peer.name}: not found or no longer shared")
        if response.status_code in (401, 403):
            raise PeerRejectedError(f"{self._peer.name}: refused our request ({code})")
        if response.status_code == 409:
            raise PeerConflictError(f"{self._peer.name}: conflict ({code})")
        if response.status_code in (400, 413, 422):
            raise PeerInputError(f"{self._peer.name}: refused the input ({code})")
        if response.status_code >= 500:
            raise PeerUnavailableError(f"{self._peer.name}: server error {response.status_code}")
        raise PeerProtocolError(f"{self._peer.name}: unexpected status {response.status_code}")


def _error_code(response: httpx.Response) -> str:
    """The ``code`` of an error answer, reading at most 4 KiB of it."""
    try:
        head = b""
        for chunk in response.iter_bytes():
            head += chunk
            if len(head) > 4096:
                return "?"
        body = json.loads(head)
    except (httpx.HTTPError, ValueError):
        return "?"
    code = body.get("error") if isinstance(body, dict) else None
    return str(code)[:64] if code else "?"


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


class CachingPeerClient:
    """A :class:`PeerClient` that keeps recent tiles in memory only, bounded in bytes and age.

    Entries are keyed by the caller too (one user's grant never serves another), live at most
    ``ttl_s`` (so access ends within that after the owner revokes), and every entry of a share
    is purged as soon as the owner answers 404 for it, or on :meth:`purge`.
    """

    def __init__(
        self,
        inner: PeerClient,
        *,
        max_bytes: int = 64 * 1024 * 1024,
        ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < ttl_s <= 60:
            raise ValueError(f"ttl_s {ttl_s} not in (0, 60]: access must end within 60 s")
        self._inner = inner
        self._max_bytes = max_bytes
        self._ttl_s = ttl_s
        self._clock = clock
        self._tiles: OrderedDict[tuple[str, Caller, int, int, int], tuple[float, bytes]] = (
            OrderedDict()
        )
        self._size = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def peer_name(self) -> str:
        return self._inner.peer_name

    @property
    def cached_bytes(self) -> int:
        return self._size

    def list_shared(self, caller: Caller) -> list[SharedSlide]:
        return self._inner.list_shared(caller)

    def slide_info(self, share_id: str, caller: Caller) -> SharedPyramidInfo:
        try:
            return self._inner.slide_info(share_id, caller)
        except PeerNotFoundError:
            self.purge(share_id)
            raise

    def read_tile(self, share_id: str, level: int, col: int, row: int, caller: Caller) -> bytes:
        key = (share_id, caller, level, col, row)
        now = self._clock()
        with self._lock:
            entry = self._tiles.get(key)
            if entry is not None and now - entry[0] < self._ttl_s:
                self._tiles.move_to_end(key)
                self.hits += 1
                return entry[1]
        self.misses += 1
        try:
            data = self._inner.read_tile(share_id, level, col, row, caller)
        except PeerNotFoundError:
            self.purge(share_id)
            raise
        if len(data) <= self._max_bytes:
            with self._lock:
                old = self._tiles.pop(key, None)
                self._size -= len(old[1]) if old else 0
                self._tiles[key] = (now, data)
                self._size += len(data)
                while self._size > self._max_bytes:
                    _, (_, evicted) = self._tiles.popitem(last=False)
                    self._size -= len(evicted)
        return data

    def notify_revoked(self, share_ids: Sequence[str]) -> int:
        return self._inner.notify_revoked(share_ids)

    def send_opinion_notice(self, notice: OpinionNotice) -> int:
        return self._inner.send_opinion_notice(notice)

    def call_json(
        self, method: str, route: str, caller: Caller, payload: object | None = None
    ) -> Any:
        return self._inner.call_json(method, route, caller, payload)  # never cached

    def purge(self, share_id: str) -> int:
        """Drop every cached tile of ``share_id`` (all callers); returns how many."""
        with self._lock:
            keys = [key for key in self._tiles if key[0] == share_id]
            for key in keys:
                self._size -= len(self._tiles.pop(key)[1])
        if keys:
            logger.info(
                "purged %d cached tiles of a revoked share from %s", len(keys), self.peer_name
            )
        return len(keys)

    def close(self) -> None:
        with self._lock:
            self._tiles.clear()
            self._size = 0
        self._inner.close()
