"""Notices to users: in-app (the ``notifications`` table) and e-mail through SMTP.

E-mails carry no PHI: the request number, its state and the slides' pseudonyms only, never
the clinical question, slide names or ids. SMTP is configured by ``SHARE_SMTP_*``; without a
host, e-mail is off and only the in-app notice is kept.
"""

from __future__ import annotations

import logging
import smtplib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from sqlalchemy import select, update

from share.db import Database
from share.errors import InvalidInputError, MailError, NotFoundError
from share.models import User
from share.opinion_models import NotificationAddress, NotificationRow

__all__ = ["MailSettings", "Notifier"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MailSettings:
    """SMTP server of the centre; ``host=""`` turns e-mail off."""

    host: str = ""
    port: int = 25
    sender: str = "iain@localhost"
    starttls: bool = False
    username: str = ""
    password: str = ""
    timeout_s: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> MailSettings:
        """``SHARE_SMTP_HOST``, ``_PORT``, ``_FROM``, ``_STARTTLS``, ``_USER``, ``_PASSWORD``."""
        port = environ.get("SHARE_SMTP_PORT", "25")
        if not port.isdigit():
            raise InvalidInputError(f"SHARE_SMTP_PORT must be a number, not {port!r}")
        return cls(
            host=environ.get("SHARE_SMTP_HOST", ""),
            port=int(port),
            sender=environ.get("SHARE_SMTP_FROM", "iain@localhost"),
            starttls=environ.get("SHARE_SMTP_STARTTLS", "0") in ("1", "true", "yes"),
            username=environ.get("SHARE_SMTP_USER", ""),
            password=environ.get("SHARE_SMTP_PASSWORD", ""),
        )


class Notifier:
    """Writes in-app notices and sends the matching e-mail (best effort, logged on failure)."""

    def __init__(self, db: Database, mail: MailSettings | None = None) -> None:
        self.db = db
        self.mail = mail or MailSettings()

    def set_email(self, username: str, email: str) -> None:
        """Record where ``username``'s notices are mailed."""
        if "@" not in email or len(email) > 254 or any(c in email for c in "\r\n <>"):
            raise InvalidInputError("not an e-mail address")
        with self.db.session() as s:
            user_id = s.scalar(select(User.id).where(User.username == username))
            if user_id is None:
                raise NotFoundError(f"user {username!r} not found")
            row = s.get(NotificationAddress, user_id)
            if row is None:
                s.add(NotificationAddress(user_id=user_id, email=email))
            else:
                row.email = email

    def notify(self, user_id: int, kind: str, text: str, *, opinion_id: int | None = None) -> bool:
        """Keep the in-app notice; mail it if the user has an address. True if mailed."""
        with self.db.session() as s:
            s.add(
                NotificationRow(
                    user_id=user_id,
                    at=datetime.now(UTC),
                    kind=kind,
                    opinion_id=opinion_id,
                    text=text[:500],
                    read=False,
                )
            )
            address = s.get(NotificationAddress, user_id)
            email = address.email if address is not None else None
        if not self.mail.host or email is None:
            return False
        try:
            self._send(email, f"[IAIN] {text[:120]}", text)
        except MailError as exc:
            logger.warning("notice kept in-app only: %s", exc)
            return False
        return True

    def _send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.mail.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body + "\n\nOpen IAIN to read the request.\n")
        try:
            with smtplib.SMTP(self.mail.host, self.mail.port, timeout=self.mail.timeout_s) as smtp:
                if self.mail.starttls:
                    smtp.starttls()
                if self.mail.username:
                    smtp.login(self.mail.username, self.mail.password)
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise MailError(f"SMTP {self.mail.host}:{self.mail.port}: {exc}") from exc

    def for_user(self, user_id: int, *, unread_only: bool = False) -> list[dict[str, Any]]:
        """A user's notices, newest first."""
        q = select(NotificationRow).where(NotificationRow.user_id == user_id)
        if unread_only:
            q = q.where(NotificationRow.read.is_(False))
        with self.db.session() as s:
            rows = s.scalars(q.order_by(NotificationRow.id.desc()).limit(500)).all()
            return [
                {
                    "id": row.id,
                    "at": row.at.isoformat(),
                    "kind": row.kind,
                    "opinion_id": row.opinion_id,
                    "text": row.text,
                    "read": row.read,
                }
                for row in rows
            ]

    def mark_read(self, user_id: int, ids: list[int]) -> int:
        with self.db.session() as s:
            result = s.execute(
                update(NotificationRow)
                .where(NotificationRow.user_id == user_id, NotificationRow.id.in_(ids))
                .values(read=True)
            )
            return int(getattr(result, "rowcount", 0) or 0)
