"""Run an ASGI app in N forked uvicorn workers on one socket bound with TCP_NODELAY.

The workaround for uvicorn#3149 used by the peer servers (IAIN itself uses viewer.serve).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Any

import uvicorn


def serve_forked(app: Any, port: int, workers: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    sock.set_inheritable(True)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            config = uvicorn.Config(
                app, loop="uvloop", http="httptools", access_log=False, log_level="warning"
            )
            uvicorn.Server(config).run(sockets=[sock])
            os._exit(0)
        children.append(pid)

    def stop(signum: int, frame: object) -> None:
        for pid in children:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for pid in children:
        os.waitpid(pid, 0)
    sys.exit(0)
