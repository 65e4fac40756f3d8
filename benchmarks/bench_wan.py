"""bench_wan: the cross-site case. IAIN behind an emulated WAN, driven by Chromium.

The viewer (Debian's chromium through Playwright, 1920x1080 window) talks to the tile server
through ``_wan_proxy.WanProxy``: 20 ms round trip, 100 Mbit/s, one round trip per new
connection, TCP slow start from a 10-segment window. Each run uses a fresh browser context
(cold browser cache) and measures:

- open: navigation to the viewer page until every tile of the first view is drawn, for the
  whole-slide view and for a deep link at x20 (what a colleague's shared link opens);
- pan: one screen width (or height) at x20, ``immediately`` (no animation), until every tile of
  the new view is drawn; a serpentine of ``--pans`` screens, rows of ``--row`` screens, with
  ``--dwell-ms`` of reading time after each (the viewer prefetches the next screen then);
- bytes: bytes the link carried server -> client (HTTP headers included) per open, and per
  screen (the pan plus its reading time, prefetch included).

Runs: a first pass (cold caches), ``--runs`` passes with the viewer as shipped, as many with
``?prefetch=0``, and a baseline through the same proxy with no delay and no shaping. Timings
are taken in the page (``performance.now()``) and polled once per frame, so they carry up to
one frame (~16 ms). ``iain serve`` runs with accounts on; the bench logs in before timing.

Usage::

    python -m benchmarks.bench_wan      # makes + converts the 20000x20000 slide once into
                                        # benchmarks/out/, starts `iain serve` on it
    python -m benchmarks.bench_wan --url http://127.0.0.1:8000 --slide-id ID   # a running IAIN
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from benchmarks._wan_proxy import WanProxy

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "benchmarks" / "out"
BIG_SLIDE = OUT / "big-20000.svs"
BIG_PYRAMID = OUT / "data" / "big-20000.zarr"
MAKE_BIG_SLIDE = REPO.parent / "shared" / "tools" / "make_big_slide.py"
SOURCE_SLIDE = REPO.parent / "shared" / "slides" / "CMU-1-Small-Region.svs"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TARGET_OPEN_S = 1.0
TARGET_PAN_MS = 250.0
TARGET_SCREEN_KB = 600.0

PAN_JS = """async ([dx, dy]) => {
  const vp = iain.viewer.viewport;
  const size = vp.getContainerSize();
  const t0 = performance.now();
  vp.panBy(vp.deltaPointsFromPixels(new OpenSeadragon.Point(dx * size.x, dy * size.y)), true);
  await iain.settled();
  const done = performance.now();
  const tiles = performance.getEntriesByType("resource")
    .filter((e) => e.startTime >= t0 && (e.name.includes("_files/") || e.name.includes("/tiles/")));
  return {
    ms: done - t0,
    tiles: tiles.length,
    first_request_ms: tiles.length ? Math.min(...tiles.map((e) => e.startTime)) - t0 : 0,
    last_response_ms: tiles.length ? Math.max(...tiles.map((e) => e.responseEnd)) - t0 : 0,
  };
}"""


@dataclass
class Run:
    open_home_ms: float = 0.0
    open_home_bytes: int = 0
    open_x20_ms: float = 0.0
    open_x20_bytes: int = 0
    pan_ms: list[float] = field(default_factory=list)
    pan_bytes: list[int] = field(default_factory=list)
    pan_tiles: list[int] = field(default_factory=list)
    pan_last_response_ms: list[float] = field(default_factory=list)


class _Counter:
    """Bytes server -> client, as the proxy saw them (HTTP headers included)."""

    def __init__(self, proxy: WanProxy) -> None:
        self.proxy = proxy

    def read(self) -> int:
        return self.proxy.down.bytes


def _open(page: Page, url: str) -> float:
    """Milliseconds from navigation start until the first view is fully drawn."""
    page.goto(url, wait_until="commit")
    page.wait_for_function("document.body.dataset.state === 'open'", timeout=30_000)
    # performance.now() counts from the navigation's start.
    ms: float = page.evaluate("window.iain.settled().then(() => performance.now())")
    return ms


def one_run(
    browser: Browser,
    base: str,
    slide_id: str,
    pans: int,
    proxy: WanProxy,
    prefetch: bool = True,
    dwell_s: float = 0.6,
    row_screens: int = 6,
    user: tuple[str, str] | None = None,
) -> Run:
    run = Run()
    counter = _Counter(proxy)
    login = (
        httpx.post(f"{base}/api/login", json={"username": user[0], "password": user[1]}, timeout=30)
        if user
        else None
    )
    cookies = login.cookies if login is not None else None
    meta = httpx.get(f"{base}/api/slides/{slide_id}", cookies=cookies, timeout=30).json()
    mpp = meta["mpp"]["x"] if isinstance(meta["mpp"], dict) else meta["mpp"]
    # Deep link into tissue-rich territory: a third of the way in, at x20.
    x_um, y_um = meta["width"] * mpp / 3, meta["height"] * mpp / 3

    for kind in ("home", "x20"):
        context = browser.new_context(viewport={"width": 1920, "height": 1080})
        _login(context, base, user)
        page = context.new_page()
        page.add_init_script("performance.setResourceTimingBufferSize(100000)")
        before = counter.read()
        url = f"{base}/view/{slide_id}"
        if kind == "x20":
            url += f"?x_um={x_um:.1f}&y_um={y_um:.1f}&mag=20"
            url += "" if prefetch else "&prefetch=0"
        ms = _open(page, url)
        used = counter.read() - before
        if kind == "home":
            run.open_home_ms, run.open_home_bytes = ms, used
            context.close()
            continue
        run.open_x20_ms, run.open_x20_bytes = ms, used
        # Serpentine: right along a row of ``row_screens`` screens, one screen down, back left.
        moves = []
        for i in range(pans):
            row, col = divmod(i, row_screens)
            last = col == row_screens - 1
            moves.append((0, 1) if last else ((1, 0) if row % 2 == 0 else (-1, 0)))
        # The reader looks at the first field before moving on.
        time.sleep(dwell_s)
        for dx, dy in moves:
            # Bytes of one screen: the pan and the reading time after it (prefetch included).
            before = counter.read()
            pan = page.evaluate(PAN_JS, [dx, dy])
            time.sleep(dwell_s)
            run.pan_ms.append(float(pan["ms"]))
            run.pan_tiles.append(int(pan["tiles"]))
            run.pan_last_response_ms.append(float(pan["last_response_ms"]))
            run.pan_bytes.append(counter.read() - before)
        context.close()
    return run


BENCH_USER = ("bench-wan", "bench-wan-password-1")


def _ensure_user(data: Path) -> None:
    """A pathologist of the default centre (which owns slides found on disk) to log in as."""
    cmd = [sys.executable, "-m", "viewer.cli", "user", "add", BENCH_USER[0], "--centre", "caen"]
    cmd += ["--role", "pathologist", "--data", str(data)]
    done = subprocess.run(cmd, input=BENCH_USER[1] + "\n", text=True, capture_output=True)
    if done.returncode != 0 and "exists" not in (done.stderr + done.stdout):
        raise SystemExit(f"bench_wan: cannot add the bench user: {done.stderr.strip()}")


def _first_slide_id(base: str, user: tuple[str, str] | None) -> str:
    auth = {"username": user[0], "password": user[1]} if user else None
    cookies = httpx.post(f"{base}/api/login", json=auth, timeout=30).cookies if auth else None
    slides = httpx.get(f"{base}/api/slides", cookies=cookies, timeout=30).json()
    if not isinstance(slides, list) or not slides:
        raise SystemExit(f"bench_wan: no slide to open at {base} (answer: {str(slides)[:200]})")
    return str(slides[0]["id"])


def _login(context: BrowserContext, base: str, user: tuple[str, str] | None) -> None:
    """Log the browser context in (outside the timings): a reader who is already signed in."""
    if user is None:
        return
    r = context.request.post(f"{base}/api/login", data={"username": user[0], "password": user[1]})
    if not r.ok:
        raise SystemExit(f"bench_wan: login failed: HTTP {r.status} {r.text()[:200]}")


def _start_iain(data: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``iain serve --data DATA`` as deployed by default (one worker, accounts on)."""
    import socket

    _ensure_user(data)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "viewer.cli", "serve", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--data", str(data), "--cache-dir", str(OUT / "cache")]
    proc = subprocess.Popen(cmd, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("bench_wan: iain serve did not start")


def _ensure_big_pyramid() -> Path:
    """benchmarks/out/data/big-20000.zarr: make_big_slide.py 20000x20000, then iain convert."""
    if not BIG_SLIDE.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        print(f"making {BIG_SLIDE} (about 80 s) ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, str(MAKE_BIG_SLIDE), "--source", str(SOURCE_SLIDE),
             "--size", "20000x20000", "--seed", "1", str(BIG_SLIDE)],
            check=True,
        )  # fmt: skip
    if not BIG_PYRAMID.exists():
        print(f"converting into {BIG_PYRAMID} ...", file=sys.stderr)
        subprocess.run(
            [sys.executable, "-m", "viewer.cli", "convert", str(BIG_SLIDE), str(BIG_PYRAMID)],
            check=True, cwd=REPO,
        )  # fmt: skip
    return BIG_PYRAMID.parent


def _summary(label: str, runs: list[Run]) -> dict[str, Any]:
    pans = [ms for r in runs for ms in r.pan_ms]
    pan_kb = [b / 1000 for r in runs for b in r.pan_bytes]
    pans_sorted = sorted(pans)
    return {
        "label": label,
        "open_home_ms": statistics.median(r.open_home_ms for r in runs),
        "open_home_kb": statistics.median(r.open_home_bytes for r in runs) / 1000,
        "open_x20_ms": statistics.median(r.open_x20_ms for r in runs),
        "open_x20_kb": statistics.median(r.open_x20_bytes for r in runs) / 1000,
        "pan_median_ms": statistics.median(pans),
        "pan_p95_ms": pans_sorted[min(len(pans) - 1, round(0.95 * (len(pans) - 1)))],
        "pan_kb_median": statistics.median(pan_kb),
        "pan_kb_max": max(pan_kb),
        "pans": len(pans),
        "tiles_per_pan": statistics.median(t for r in runs for t in r.pan_tiles),
        "pan_last_tile_ms": statistics.median(t for r in runs for t in r.pan_last_response_ms),
        "per_pan": [
            {"ms": round(ms), "tiles": t, "kb": round(b / 1000)}
            for r in runs
            for ms, t, b in zip(r.pan_ms, r.pan_tiles, r.pan_bytes, strict=True)
        ],
    }


def _print(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'link':<40} {'open home':>10} {'open x20':>10} {'kB x20':>8} "
        f"{'pan p50':>8} {'pan p95':>8} {'kB/pan':>8} {'kB max':>7} {'tiles':>6} {'net p50':>8}"
    )
    for r in rows:
        print(
            f"{r['label']:<40} {r['open_home_ms']:>8.0f}ms {r['open_x20_ms']:>8.0f}ms "
            f"{r['open_x20_kb']:>8.0f} {r['pan_median_ms']:>6.0f}ms {r['pan_p95_ms']:>6.0f}ms "
            f"{r['pan_kb_median']:>8.0f} {r['pan_kb_max']:>7.0f} {r['tiles_per_pan']:>6.0f} "
            f"{r['pan_last_tile_ms']:>6.0f}ms"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--url", help="an already running IAIN (default: start `iain serve`)")
    p.add_argument("--slide-id", help="default: the first slide the server lists")
    p.add_argument("--user", help="log in as USER (with --url; accounts on)")
    p.add_argument("--password", default="")
    p.add_argument("--data", type=Path, help="pyramids to serve (default: the big one, cached)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--pans", type=int, default=8)
    p.add_argument("--rtt-ms", type=float, default=20.0)
    p.add_argument("--rate-mbit", type=float, default=100.0)
    p.add_argument("--dwell-ms", type=float, default=600.0, help="reading time per screen")
    p.add_argument("--row", type=int, default=6, help="screens per row of the serpentine")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)

    proc = None
    user: tuple[str, str] | None = (args.user, args.password) if args.user else None
    if args.url:
        base = args.url.rstrip("/")
    else:
        proc, base = _start_iain(args.data or _ensure_big_pyramid())
        user = BENCH_USER
    upstream_port = int(base.rsplit(":", 1)[1])
    rows = []
    try:
        slide_id = args.slide_id or _first_slide_id(base, user)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            dwell = args.dwell_ms / 1000

            def wan(prefetch: bool) -> Run:
                proxy = WanProxy(upstream_port, args.rtt_ms, args.rate_mbit)
                url = f"http://127.0.0.1:{proxy.port}"
                try:
                    return one_run(
                        browser, url, slide_id, args.pans, proxy, prefetch, dwell, args.row, user
                    )
                finally:
                    proxy.stop()

            link = f"WAN {args.rtt_ms:g}ms/{args.rate_mbit:g}Mbit"
            # Pass 1 meets cold caches (page cache, the server's computed-tile cache); its
            # figures are printed apart. Later passes are what a warm server does.
            rows.append(_summary(f"{link}, first pass (cold caches)", [wan(True)]))
            rows.append(_summary(link, [wan(True) for _ in range(args.runs)]))
            rows.append(_summary(f"{link}, no prefetch", [wan(False) for _ in range(args.runs)]))
            # Baseline: the same proxy with no delay and no shaping (same byte counting).
            plain = WanProxy(upstream_port, 0.0, 0.0)
            try:
                direct = [
                    one_run(
                        browser, f"http://127.0.0.1:{plain.port}", slide_id, args.pans, plain,
                        True, dwell, args.row, user,
                    )
                ]  # fmt: skip
            finally:
                plain.stop()
            rows.append(_summary("loopback, no WAN (baseline)", direct))
            browser.close()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    _print(rows)
    shipped = rows[1]  # warm server, prefetch on: the viewer as shipped
    ok = (
        shipped["open_x20_ms"] <= TARGET_OPEN_S * 1000
        and shipped["pan_median_ms"] <= TARGET_PAN_MS
        and shipped["pan_kb_median"] <= TARGET_SCREEN_KB
    )
    print(
        f"targets: open <= {TARGET_OPEN_S * 1000:.0f} ms, pan median <= {TARGET_PAN_MS:.0f} ms, "
        f"<= {TARGET_SCREEN_KB:.0f} kB per screen: {'MET' if ok else 'NOT MET'}"
    )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
