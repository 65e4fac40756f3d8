"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives, for the tests."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from aiosmtpd.controller import Controller

from share.notify import MailSettings


class _Handler:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.content
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else str(content)
        with self.sink.lock:
            for rcpt in envelope.rcpt_tos:
                self.sink.received.append((rcpt, text))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpSink:
    """``with SmtpSink() as sink``: messages land in ``sink.received`` as (recipient, text)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.lock = threading.Lock()
        self.received: list[tuple[str, str]] = []
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    def settings(self) -> MailSettings:
        return MailSettings(host="127.0.0.1", port=self.port, sender="iain@caen.example")

    @property
    def messages(self) -> list[str]:
        with self.lock:
            return [text for _, text in self.received]

    def wait_for(self, rcpt: str, needle: str, timeout_s: float = 5.0) -> list[str]:
        """Messages to ``rcpt`` once one contains ``needle`` (delivery is synchronous; the
        wait only covers the server thread handing it over)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                found = [t for r, t in self.received if r == rcpt]
            if any(needle in t for t in found):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no mail to {rcpt} containing {needle!r}; got {found}")
            time.sleep(0.02)
