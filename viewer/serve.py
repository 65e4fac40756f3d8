"""Run the app under granian (default) or uvicorn, one or several worker processes.

granian (a Rust HTTP server running the same ASGI app) answers tiles ~3x faster than
uvicorn on this machine (benchmarks/RESULTS.md). Under uvicorn, uvicorn#3149: with
``--workers`` the accepted sockets of the workers lose TCP_NODELAY on Linux, and
Nagle + delayed ACK add ~40 ms to every keep-alive response. We bind the socket
ourselves and set TCP_NODELAY on the listening socket, which Linux copies onto every
accepted connection, then hand it to uvicorn's own supervisor (one process per worker,
each building the app from ``IAIN_*`` variables: no state shared in memory).
"""

from __future__ import annotations

import logging
import os
import socket

import uvicorn
from uvicorn.supervisors import Multiprocess

from viewer.config import ServerSettings

__all__ = ["bind_socket", "run_server", "uvicorn_config"]

logger = logging.getLogger(__name__)


def uvicorn_config(settings: ServerSettings) -> uvicorn.Config:
    return uvicorn.Config(
        "viewer.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop=settings.loop,
        http="httptools",
        access_log=False,  # one log line per tile would cost more than the tile
        log_level="info",
        timeout_keep_alive=30,
        # X-Forwarded-For is IAIN's to believe or not (SHARE_TRUSTED_PROXIES), as under granian;
        # uvicorn's own default would trust it from any 127.0.0.1 peer
        proxy_headers=False,
    )


def bind_socket(config: uvicorn.Config) -> socket.socket:
    """The listening socket, with TCP_NODELAY that accepted connections inherit."""
    sock = config.bind_socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def run_granian(settings: ServerSettings) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    Granian(
        "viewer.app:create_app_from_env",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        loop=Loops.uvloop if settings.loop == "uvloop" else Loops.asyncio,
        log_access=False,  # one log line per tile would cost more than the tile
        backlog=2048,
    ).serve()


def run_server(settings: ServerSettings) -> None:
    """Serve until interrupted; blocks."""
    os.environ.update(settings.to_env())  # worker processes read their settings from here
    if settings.server == "granian":
        run_granian(settings)
        return
    config = uvicorn_config(settings)
    sock = bind_socket(config)
    if settings.workers == 1:
        uvicorn.Server(config).run(sockets=[sock])
    else:
        Multiprocess(config, sockets=[sock]).run()
