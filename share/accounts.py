"""Centres, users, password login with rate limiting, server-side sessions, the slide registry.

Sessions live in the database so that any worker answers; each process caches a resolved session
for ``session_cache_s`` (2 s) so a tile request costs a dict lookup, and a logout elsewhere
applies within that delay.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select, update

from share import audit
from share.authz import Principal, Role, SlideRef
from share.config import ShareSettings
from share.db import Database
from share.errors import (
    ConflictError,
    InvalidCredentialsError,
    InvalidInputError,
    LoginRateLimitedError,
    NotFoundError,
    SessionExpiredError,
)
from share.models import Centre, LoginAttempt, Session, Slide, User

__all__ = [
    "Accounts",
    "SessionInfo",
    "now_utc",
]

logger = logging.getLogger(__name__)

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
MIN_PASSWORD_LEN = 8


def now_utc() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    # SQLite returns naive datetimes; everything we store is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def token_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class SessionInfo:
    """A live session as the request sees it."""

    session_id: str
    principal: Principal
    csrf_token: str
    created_at: datetime


class Accounts:
    """Everything about who someone is; ``authorize`` decides what they may do."""

    def __init__(self, db: Database, settings: ShareSettings) -> None:
        self.db = db
        self.settings = settings
        self.hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_kib
        )
        # Verified against when the username is unknown, so both paths cost one argon2 hash.
        self._dummy_hash = self.hasher.hash(secrets.token_hex(16))
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[float, SessionInfo, datetime]] = {}
        self._slides: dict[str, tuple[float, SlideRef | None]] = {}

    # centres and users -------------------------------------------------------------------
    def ensure_centres(self, centres: Iterable[str] | None = None) -> None:
        """Create the configured centres that do not exist yet."""
        with self.db.session() as s:
            have = set(s.scalars(select(Centre.id)))
            for centre in centres if centres is not None else self.settings.centres:
                if centre not in have:
                    s.add(Centre(id=centre, name=centre.capitalize()))

    def add_user(
        self,
        username: str,
        centre: str,
        role: str,
        password: str | None,
        oidc_subject: str | None = None,
    ) -> Principal:
        """Create a user; ``password=None`` makes an OIDC-only account (``oidc_subject``)."""
        if not USERNAME_RE.match(username):
            raise InvalidInputError(
                f"username {username!r}: use 2-64 of a-z 0-9 . _ - (starting alphanumeric)"
            )
        try:
            role_value = Role(role)
        except ValueError:
            raise InvalidInputError(
                f"role {role!r} not in {', '.join(r.value for r in Role)}"
            ) from None
        if password is not None and len(password) < MIN_PASSWORD_LEN:
            raise InvalidInputError(f"password shorter than {MIN_PASSWORD_LEN} characters")
        pw_hash = self.hasher.hash(password) if password is not None else None
        with self.db.session() as s:
            if s.get(Centre, centre) is None:
                known = ", ".join(s.scalars(select(Centre.id).order_by(Centre.id)))
                raise InvalidInputError(f"centre {centre!r} not in {known}")
            if s.scalar(select(User.id).where(User.username == username)) is not None:
                raise ConflictError(f"user {username!r} already exists")
            user = User(
                username=username,
                centre_id=centre,
                role=role_value.value,
                password_hash=pw_hash,
                oidc_subject=oidc_subject or None,
                active=True,
                created_at=now_utc(),
            )
            s.add(user)
            s.flush()
            principal = Principal(user.id, username, centre, role_value)
        logger.info("user created (role %s, centre %s)", role_value.value, centre)
        return principal

    def principal(self, username: str) -> Principal:
        with self.db.session() as s:
            user = s.scalar(select(User).where(User.username == username))
            if user is None:
                raise NotFoundError(f"user {username!r} not found")
            return Principal(user.id, user.username, user.centre_id, Role(user.role))

    # password login ----------------------------------------------------------------------
    def _check_rate(self, username: str, ip: str) -> None:
        window_start = now_utc() - timedelta(seconds=self.settings.login_window_s)
        with self.db.session() as s:
            last_ok = s.scalar(
                select(func.max(LoginAttempt.at)).where(
                    LoginAttempt.username == username, LoginAttempt.ip == ip, LoginAttempt.ok
                )
            )
            since = max(window_start, _aware(last_ok)) if last_ok is not None else window_start
            failures = s.scalars(
                select(LoginAttempt.at).where(
                    LoginAttempt.username == username,
                    LoginAttempt.ip == ip,
                    LoginAttempt.ok.is_(False),
                    LoginAttempt.at > since,
                )
            ).all()
        if len(failures) >= self.settings.login_max_failures:
            oldest = min(_aware(a) for a in failures)
            retry = oldest + timedelta(seconds=self.settings.login_window_s) - now_utc()
            raise LoginRateLimitedError(
                f"too many failed logins for this account from this address; "
                f"retry in {max(1, int(retry.total_seconds()))} s",
                retry_after_s=max(1, int(retry.total_seconds())),
            )

    def authenticate(self, username: str, password: str, ip: str) -> Principal:
        """Check a password (rate-limited per username+IP, audited) and return the principal."""
        self._check_rate(username, ip)
        with self.db.session() as s:
            user = s.scalar(select(User).where(User.username == username))
            stored = user.password_hash if user is not None and user.active else None
            ok = False
            try:
                ok = self.hasher.verify(stored or self._dummy_hash, password) and stored is not None
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                ok = False
            s.add(LoginAttempt(username=username[:150], ip=ip, at=now_utc(), ok=ok))
            centre = user.centre_id if user is not None else None
            audit.append(
                s,
                actor=username[:150],
                action="login",
                outcome="ok" if ok else "failed",
                centre_id=centre,
                detail={"ip": ip, "method": "password"},
            )
            if (
                ok
                and user is not None
                and stored is not None
                and self.hasher.check_needs_rehash(stored)
            ):
                user.password_hash = self.hasher.hash(password)
            principal = (
                Principal(user.id, user.username, user.centre_id, Role(user.role))
                if ok and user is not None
                else None
            )
        if principal is None:
            raise InvalidCredentialsError("invalid username or password")
        return principal

    # sessions ----------------------------------------------------------------------------
    def create_session(self, principal: Principal, ip: str) -> tuple[str, SessionInfo]:
        """Open a session; returns the cookie token (only its hash is stored)."""
        token = secrets.token_urlsafe(32)
        now = now_utc()
        info = SessionInfo(token_id(token), principal, secrets.token_urlsafe(24), now)
        with self.db.session() as s:
            s.add(
                Session(
                    id=info.session_id,
                    user_id=principal.user_id,
                    csrf_token=info.csrf_token,
                    created_at=now,
                    last_seen_at=now,
                    revoked=False,
                    ip=ip,
                )
            )
        return token, info

    def cached_session(self, token: str) -> SessionInfo | None:
        """The session if this process checked it less than ``session_cache_s`` ago (no I/O)."""
        sid = token_id(token)
        with self._lock:
            cached = self._sessions.get(sid)
        if cached is None or time.monotonic() - cached[0] >= self.settings.session_cache_s:
            return None
        self._check_timeouts(cached[1], cached[2])
        return cached[1]

    def resolve_session(self, token: str) -> SessionInfo:
        """Session of a cookie token, or SessionExpiredError (unknown, revoked, timed out)."""
        sid = token_id(token)
        mono = time.monotonic()
        with self._lock:
            cached = self._sessions.get(sid)
        if cached is not None and mono - cached[0] < self.settings.session_cache_s:
            info, last_seen = cached[1], cached[2]
            self._check_timeouts(info, last_seen)
            return info
        now = now_utc()
        with self.db.session() as s:
            row = s.get(Session, sid)
            user = s.get(User, row.user_id) if row is not None else None
            if row is None or user is None or row.revoked or not user.active:
                with self._lock:
                    self._sessions.pop(sid, None)
                raise SessionExpiredError("session is not valid; log in again")
            info = SessionInfo(
                sid,
                Principal(user.id, user.username, user.centre_id, Role(user.role)),
                row.csrf_token,
                _aware(row.created_at),
            )
            last_seen = _aware(row.last_seen_at)
            self._check_timeouts(info, last_seen)
            if (now - last_seen).total_seconds() >= self.settings.session_touch_s:
                row.last_seen_at = now
                last_seen = now
        with self._lock:
            if len(self._sessions) > 100_000:
                self._sessions.clear()
            self._sessions[sid] = (mono, info, last_seen)
        return info

    def _check_timeouts(self, info: SessionInfo, last_seen: datetime) -> None:
        now = now_utc()
        if (now - info.created_at).total_seconds() > self.settings.session_absolute_s:
            raise SessionExpiredError("session reached its maximum age; log in again")
        idle_allowed = self.settings.session_idle_s + self.settings.session_touch_s
        if (now - last_seen).total_seconds() > min(idle_allowed, self.settings.session_absolute_s):
            raise SessionExpiredError("session idle too long; log in again")

    def revoke_session(self, session_id: str) -> None:
        with self.db.session() as s:
            s.execute(update(Session).where(Session.id == session_id).values(revoked=True))
        with self._lock:
            self._sessions.pop(session_id, None)

    # slides ------------------------------------------------------------------------------
    def register_slides(self, slides: Iterable[tuple[str, str]], centre: str | None = None) -> int:
        """Register ``(slide_id, name)`` pairs found on disk; existing ones keep their centre."""
        centre = centre or self.settings.default_centre
        added = 0
        with self.db.session() as s:
            if s.get(Centre, centre) is None:
                raise InvalidInputError(f"centre {centre!r} does not exist")
            have = set(s.scalars(select(Slide.slide_id)))
            for slide_id, name in slides:
                if slide_id not in have:
                    s.add(Slide(slide_id=slide_id, centre_id=centre, name=name))
                    have.add(slide_id)
                    added += 1
        return added

    def assign_slide(self, slide_id: str, centre: str) -> None:
        with self.db.session() as s:
            slide = s.get(Slide, slide_id)
            if slide is None:
                raise NotFoundError(f"slide {slide_id!r} not registered")
            if s.get(Centre, centre) is None:
                raise InvalidInputError(f"centre {centre!r} does not exist")
            slide.centre_id = centre
        self.forget_slide(slide_id)

    def forget_slide(self, slide_id: str) -> None:
        """Drop a cached lookup (after registering or moving the slide)."""
        with self._lock:
            self._slides.pop(slide_id, None)

    def slide(self, slide_id: str) -> SlideRef | None:
        """Centre of a slide (cached like sessions), None when unknown."""
        mono = time.monotonic()
        with self._lock:
            cached = self._slides.get(slide_id)
        if cached is not None and mono - cached[0] < self.settings.session_cache_s:
            return cached[1]
        with self.db.session() as s:
            centre = s.scalar(select(Slide.centre_id).where(Slide.slide_id == slide_id))
        ref = SlideRef(slide_id, centre) if centre is not None else None
        with self._lock:
            if len(self._slides) > 100_000:  # bounded: unknown ids are cached too
                self._slides.clear()
            self._slides[slide_id] = (mono, ref)
        return ref

    def slides(self) -> list[tuple[SlideRef, str]]:
        with self.db.session() as s:
            rows = s.execute(select(Slide.slide_id, Slide.centre_id, Slide.name)).all()
        return [(SlideRef(r[0], r[1]), r[2]) for r in rows]
