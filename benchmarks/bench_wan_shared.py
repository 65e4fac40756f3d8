"""bench_wan_shared: a slide shared for a second opinion, read at Lille from Caen over the WAN.

Two ``iain`` nodes on loopback (Caen owns the slide, Lille's pathologist reads it in Lille's
viewer at ``/shared-view/caen/{share_id}``). The emulated WAN of ``bench_wan`` (20 ms round trip,
100 Mbit/s, slow start; ``_wan_proxy.WanProxy``) sits where it would in a deployment: between
Lille's node and Caen's node. The browser talks to its own node directly (a hospital LAN).
Every tile is authorised at Caen per request (signed node token, share re-checked, audited) and
may be kept 30 s in Lille's memory cache.

Measured like ``bench_wan`` (fresh browser context per run, 1920x1080): ``open`` of the whole
slide and of a deep link at x20, then a serpentine of pans at x20 with reading time; bytes are
what crossed the WAN (node to node). Each run starts at a different place, so the tiles of the
x20 view and pans are new to Lille's cache; the whole-slide view is cold in the first run only.
A baseline runs the same through the proxy with no delay and no shaping.

Usage::

    python -m benchmarks.bench_wan_shared --data DIR   # DIR holds one *.zarr pyramid
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, sync_playwright

from benchmarks._wan_proxy import WanProxy
from benchmarks.bench_wan import CHROMIUM_ARGS, TARGET_OPEN_S, TARGET_PAN_MS

REPO = Path(__file__).resolve().parent.parent
USERS = {"caen": "caen-patho", "lille": "lille-patho"}

PAN_JS = """async ([dx, dy]) => {
  const vp = iain.viewer.viewport;
  const size = vp.getContainerSize();
  const t0 = performance.now();
  vp.panBy(vp.deltaPointsFromPixels(new OpenSeadragon.Point(dx * size.x, dy * size.y)), true);
  await iain.settled();
  const tiles = performance.getEntriesByType("resource")
    .filter((e) => e.startTime >= t0 && e.name.includes("/tiles/"));
  return { ms: performance.now() - t0, tiles: tiles.length };
}"""


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _prepare(home: Path, name: str, data: Path | None, peers: list[dict[str, str]]) -> None:
    from share.accounts import Accounts
    from share.config import ShareSettings
    from share.db import open_database

    (home / "data").mkdir(parents=True)
    if data is not None:
        for pyramid in data.glob("*.zarr"):  # hard links: the bench never writes the source
            subprocess.run(
                ["cp", "-al", str(pyramid), str(home / "data" / pyramid.name)], check=True
            )
    (home / "federation.json").write_text(json.dumps({"node": name, "peers": peers}))
    settings = ShareSettings(data_dir=home, default_centre=name)
    db = open_database(settings.url)
    accounts = Accounts(db, settings)
    accounts.ensure_centres()
    accounts.add_user(USERS[name], name, "pathologist", f"{USERS[name]}-password")
    db.dispose()


def _start(home: Path, name: str, port: int) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "PYTHONPATH": str(REPO),
        "IAIN_DATA": str(home / "data"),
        "IAIN_CACHE_DIR": str(home / "cache"),
        "SHARE_DATA_DIR": str(home),
        "SHARE_DEFAULT_CENTRE": name,
        "SHARE_FEDERATION_FILE": str(home / "federation.json"),
        "SHARE_NODE_KEY_FILE": str(home / "node.pem"),
    }
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "viewer.app:create_app_from_env"]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with (home / "node.log").open("wb") as log:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)


def _wait(url: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"bench_wan_shared: {url} did not start")


def _client(url: str, user: str) -> tuple[httpx.Client, dict[str, str]]:
    client = httpx.Client(base_url=url, timeout=120)
    answer = client.post("/api/login", json={"username": user, "password": f"{user}-password"})
    answer.raise_for_status()
    return client, {"x-csrf-token": answer.json()["csrf_token"]}


def _share_for_lille(caen: str, lille: str) -> tuple[str, dict[str, Any]]:
    """Caen asks Lille's pathologist (the slide is shared, its copy derived); the share id."""
    client, headers = _client(caen, USERS["caen"])
    with closing(client):
        slide = client.get("/api/slides").json()[0]
        body = {
            "slide_ids": [slide["id"]],
            "question": "benchmark",
            "due_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
            "consultant": {"centre": "lille", "username": USERS["lille"]},
        }
        oid = client.post("/api/opinions", json=body, headers=headers).json()["id"]
        client.post(f"/api/opinions/{oid}/send", headers=headers).raise_for_status()
    client, _ = _client(lille, USERS["lille"])
    with closing(client):
        opinion = client.get(f"/api/inbox/opinions/caen/{oid}").json()
        share_id = opinion["slides"][0]["share_id"]
        info = client.get(f"/shared/caen/{share_id}").json()
    return share_id, info


def warm_up(lille: str, share_id: str) -> None:
    client, _ = _client(lille, USERS["lille"])
    with closing(client):
        for _ in range(3):
            if client.get(f"/shared/caen/{share_id}").status_code == 200:
                return
    raise SystemExit("bench_wan_shared: Lille cannot reach Caen through the link")


def _open(page: Page, url: str) -> float:
    page.goto(url, wait_until="commit")
    page.wait_for_function("document.body.dataset.state === 'open'", timeout=60_000)
    ms: float = page.evaluate("window.iain.settled().then(() => performance.now())")
    return ms


def one_run(
    browser: Browser,
    lille: str,
    share_id: str,
    info: dict[str, Any],
    proxy: WanProxy,
    start: float,
    pans: int,
    dwell_s: float,
) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    login = context.request.post(
        f"{lille}/api/login",
        data={"username": USERS["lille"], "password": f"{USERS['lille']}-password"},
    )
    assert login.ok, login.text()
    page = context.new_page()
    page.add_init_script("performance.setResourceTimingBufferSize(100000)")
    url = f"{lille}/shared-view/caen/{share_id}"
    before = proxy.down.bytes
    home_ms = _open(page, url)
    home_kb = (proxy.down.bytes - before) / 1000
    mpp = info["mpp_x"] or 0.25
    x_um, y_um = info["width"] * mpp * start, info["height"] * mpp * start
    before = proxy.down.bytes
    x20_ms = _open(page, f"{url}?x_um={x_um:.1f}&y_um={y_um:.1f}&mag=20")
    x20_kb = (proxy.down.bytes - before) / 1000
    time.sleep(dwell_s)
    pan_ms, pan_kb, tiles = [], [], []
    for i in range(pans):
        move = (0, 1) if i % 4 == 3 else ((1, 0) if (i // 4) % 2 == 0 else (-1, 0))
        before = proxy.down.bytes
        pan = page.evaluate(PAN_JS, list(move))
        time.sleep(dwell_s)
        pan_ms.append(float(pan["ms"]))
        tiles.append(int(pan["tiles"]))
        pan_kb.append((proxy.down.bytes - before) / 1000)
    context.close()
    return {"home_ms": home_ms, "home_kb": home_kb, "x20_ms": x20_ms, "x20_kb": x20_kb,
            "pan_ms": pan_ms, "pan_kb": pan_kb, "tiles": tiles}  # fmt: skip


def _summary(label: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    pans = sorted(ms for r in runs for ms in r["pan_ms"])
    return {
        "label": label,
        "open_home_ms_first": runs[0]["home_ms"],
        "open_x20_ms": statistics.median(r["x20_ms"] for r in runs),
        "open_x20_kb": statistics.median(r["x20_kb"] for r in runs),
        "pan_median_ms": statistics.median(pans),
        "pan_p95_ms": pans[min(len(pans) - 1, round(0.95 * (len(pans) - 1)))],
        "pan_kb_median": statistics.median(kb for r in runs for kb in r["pan_kb"]),
        "tiles_per_pan": statistics.median(t for r in runs for t in r["tiles"]),
        "pans": len(pans),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--data", type=Path, required=True, help="a directory with one *.zarr")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--pans", type=int, default=8)
    p.add_argument("--rtt-ms", type=float, default=20.0)
    p.add_argument("--rate-mbit", type=float, default=100.0)
    p.add_argument("--dwell-ms", type=float, default=600.0)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)

    from share.signing import NodeKey

    base = Path(tempfile.mkdtemp(prefix="iain-wan-shared-"))
    keys = {name: NodeKey.generate(name) for name in USERS}
    ports = {name: _port() for name in USERS}
    caen_direct = WanProxy(ports["caen"], 0.0, float("inf"))  # swapped per run, see below
    procs: list[subprocess.Popen[bytes]] = []
    rows = []
    try:
        # Lille reaches Caen through a fixed local port; each run puts a fresh link behind it.
        relay_port = caen_direct.port
        for name, key in keys.items():
            home = base / name
            other = "lille" if name == "caen" else "caen"
            url = f"http://127.0.0.1:{relay_port if name == 'lille' else ports[other]}"
            peers = [{"name": other, "url": url, "public_key": keys[other].public_pem()}]
            _prepare(home, name, args.data if name == "caen" else None, peers)
            (home / "node.pem").write_bytes(key.private_pem())
            procs.append(_start(home, name, ports[name]))
        caen, lille = (f"http://127.0.0.1:{ports[n]}" for n in ("caen", "lille"))
        _wait(caen)
        _wait(lille)
        share_id, info = _share_for_lille(caen, lille)
        caen_direct.stop()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            starts = iter(0.2 + 0.07 * i for i in range(2 * args.runs + 2))

            def link(rtt_ms: float, rate: float) -> dict[str, Any]:
                proxy = WanProxy(ports["caen"], rtt_ms, rate, port=relay_port)
                warm_up(lille, share_id)  # Lille's pool drops the last link's connections
                try:
                    run = one_run(browser, lille, share_id, info, proxy, next(starts),
                                  args.pans, args.dwell_ms / 1000)  # fmt: skip
                finally:
                    proxy.stop()
                return run

            label = f"WAN {args.rtt_ms:.0f} ms, {args.rate_mbit:.0f} Mbit/s, via Lille"
            rows.append(
                _summary(label, [link(args.rtt_ms, args.rate_mbit) for _ in range(args.runs)])
            )
            rows.append(_summary("no delay, no shaping, via Lille", [link(0.0, float("inf"))]))
            browser.close()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
    for row in rows:
        print(json.dumps(row))
    print(f"targets: open <= {TARGET_OPEN_S * 1000:.0f} ms, pan p50 <= {TARGET_PAN_MS:.0f} ms")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
