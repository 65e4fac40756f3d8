"""Cost of the per-request access check (session cookie -> principal -> authorize -> slide).

Drives the ASGI stack directly (no sockets): a tile-like endpoint behind ``AuthMiddleware``
that calls ``app.state.slide_access``, against the same endpoint with neither (the baseline).
Also measures how long a logout in another worker takes to reach this one.

    python -m benchmarks.bench_access [--n 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request

from share.accounts import Accounts
from share.audit import ViewAggregator
from share.config import ShareSettings
from share.db import open_database
from share.errors import AuthenticationError
from share.web import SESSION_COOKIE, AuthMiddleware, SlideAccess, decision_only


class _State:
    pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-access-"))
    settings = ShareSettings(data_dir=tmp, argon2_time_cost=1, argon2_memory_kib=1024)
    db = open_database(settings.url)
    accounts = Accounts(db, settings)
    accounts.ensure_centres()
    p = accounts.add_user("bench", "caen", "pathologist", "bench-password")
    accounts.register_slides([("s1", "slide")])
    token, info = accounts.create_session(p, "127.0.0.1")
    views = ViewAggregator(db, flush_s=3600)
    state = _State()
    state.slide_access = SlideAccess(accounts, views, decision_only)  # type: ignore[attr-defined]

    class App:
        state: Any = None

    app = App()
    app.state = state

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        if scope.get("check", True):
            app.state.slide_access(Request(scope), "s1")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"x"})

    middleware = AuthMiddleware(endpoint, accounts, settings)

    def scope(check: bool) -> dict[str, Any]:
        return {
            "type": "http",
            "method": "GET",
            "path": "/slides/s1/tiles/0/1/2",
            "app": app,
            "headers": [(b"cookie", f"{SESSION_COOKIE}={token}".encode())],
            "query_string": b"",
            "path_params": {"slide_id": "s1", "level": 0, "col": 1, "row": 2},
            "check": check,
        }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(_message: Any) -> None:
        return None

    async def run(target: Any, check: bool, n: int) -> list[float]:
        batches = []
        for _ in range(10):
            t = time.perf_counter()
            for _ in range(n // 10):
                await target(scope(check), receive, send)
            batches.append((time.perf_counter() - t) / (n // 10) * 1e6)
        return batches

    async def bench() -> tuple[float, float]:
        await run(middleware, True, 1000)  # warm the caches
        with_check = statistics.median(await run(middleware, True, args.n))
        baseline = statistics.median(await run(endpoint, False, args.n))
        return with_check, baseline

    with_check, baseline = asyncio.run(bench())
    # Revocation across workers: another process logs the session out.
    other = Accounts(db, settings)
    other.revoke_session(info.session_id)
    t = time.perf_counter()
    while True:
        try:
            accounts.cached_session(token) or accounts.resolve_session(token)
        except AuthenticationError:
            break
        time.sleep(0.01)
    delay = time.perf_counter() - t
    print(f"per request, cached session + authorize + view record: {with_check:.1f} us")
    print(f"per request, no check (baseline):                      {baseline:.1f} us")
    print(f"overhead: {with_check - baseline:.1f} us/request")
    print(
        f"logout in another worker refused here after {delay:.2f} s "
        f"(cache {settings.session_cache_s} s)"
    )
    db.dispose()


if __name__ == "__main__":
    main()
