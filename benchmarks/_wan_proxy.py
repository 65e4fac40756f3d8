"""An emulated wide-area link on loopback: a TCP proxy adding delay and shaping bandwidth.

Model (per direction, shared by every connection, as one access link would be):

- serialisation: the link carries ``rate_mbit`` megabits per second; a chunk leaves when the
  link is free and occupies it for ``len / rate``;
- propagation: each chunk arrives ``rtt_ms / 2`` after it left;
- connection set-up: a new connection forwards nothing for one round trip (the TCP handshake
  the loopback skipped);
- slow start (server to client): a fresh connection may send 10 segments (14,600 B) in its
  first round trip, then twice as much in each following one (RFC 6928 initial window).
  Loss, and the window restart after idle, are not modelled.

Bytes are counted per direction so a benchmark can read the bytes of one screen.
Why not ``tc netem``: the kernel here has no ``sch_netem`` module.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import threading
from dataclasses import dataclass

__all__ = ["WanProxy"]

INITIAL_WINDOW_B = 10 * 1460
CHUNK_B = 16 * 1024


@dataclass
class _Link:
    rate_bytes_per_s: float  # inf: no shaping
    one_way_s: float
    free_at: float = 0.0
    bytes: int = 0

    def schedule(self, now: float, size: int, not_before: float) -> float:
        """Arrival time of a chunk of ``size`` bytes queued at ``now``."""
        start = max(now, self.free_at, not_before)
        self.free_at = start + size / self.rate_bytes_per_s
        self.bytes += size
        return self.free_at + self.one_way_s


class WanProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream`` through an emulated link, in its own thread."""

    def __init__(
        self, upstream_port: int, rtt_ms: float = 20.0, rate_mbit: float = 100.0, port: int = 0
    ) -> None:
        rate = rate_mbit * 1e6 / 8 if rate_mbit > 0 else math.inf
        self.rtt_s = rtt_ms / 1000
        self.up = _Link(rate, self.rtt_s / 2)  # client -> server
        self.down = _Link(rate, self.rtt_s / 2)  # server -> client
        self.connections = 0
        self._upstream_port = upstream_port
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))  # a fixed port: a node configured to reach it
        self.port = int(self._sock.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, sock=self._sock)
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.sleep(self.rtt_s)  # the handshake's round trip
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            c_writer.close()
            return
        for w in (c_writer, s_writer):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pumps = asyncio.gather(
            self._pump(c_reader, s_writer, self.up, slow_start=False),
            self._pump(s_reader, c_writer, self.down, slow_start=True),
        )
        try:
            await pumps
        except asyncio.CancelledError:
            # Shutting down. Ending normally keeps asyncio's stream callback (which calls
            # task.exception() on 3.11) from reporting the cancellation as an error.
            pumps.cancel()
            for w in (c_writer, s_writer):
                w.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        slow_start: bool,
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        first_send: float | None = None
        sent = 0

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                arrive, data = item
                delay = arrive - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()

        delivery = asyncio.create_task(deliver())
        try:
            while data := await reader.read(CHUNK_B):
                now = loop.time()
                if first_send is None:
                    first_send = now
                not_before = now
                if slow_start:
                    # Round trip in which this chunk's last byte may leave: the window doubles
                    # each round trip from INITIAL_WINDOW_B.
                    rounds = math.floor(math.log2((sent + len(data)) / INITIAL_WINDOW_B + 1))
                    not_before = first_send + rounds * self.rtt_s
                sent += len(data)
                queue.put_nowait((link.schedule(now, len(data), not_before), data))
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            delivery.cancel()
            raise
        finally:
            queue.put_nowait(None)
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await delivery
            with contextlib.suppress(ConnectionError, OSError):
                writer.close()
