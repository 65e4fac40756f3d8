"""Tile serving throughput: IAIN as deployed vs nginx, an OpenSlide DeepZoom server and a
stored-TIFF-bytes server, on the same random level-0 tissue tiles, in one run.

    python -m benchmarks.bench_serve [--duration 20] [--workers 2]

Inputs (cached in benchmarks/out/, gitignored): s04.svs from
../shared/tools/make_big_slide.py (20000x20000, seed 1, Q85), its IAIN pyramid
(``iain convert``), its DeepZoom files cut by ``vips dzsave`` for nginx. Load: wrk with
random_urls.lua (a random tile of the list per request), -t1 -c1, -t2 -c16, -t2 -c64,
``--duration`` s each after a 3 s warm-up, on the same cores as the servers. Prints req/s,
p50, p99, errors and ratios; writes out/serve.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import imagecodecs
import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
REPO = HERE.parent
SHARED = REPO.parent / "shared"
PY = sys.executable
SIZE = 20000
TILE = 256
DZ_MAX = 15  # ceil(log2(20000)): DeepZoom level of full resolution
CONCURRENCY = ((1, 1), (2, 16), (2, 64))  # (wrk threads, connections)


def run(cmd: list[str], **kwargs: object) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def prepare() -> tuple[Path, Path, Path]:
    """The slide, its IAIN data dir and its dzsave tree (built once)."""
    OUT.mkdir(exist_ok=True)
    slide = OUT / "s04.svs"
    if not slide.exists():
        source = SHARED / "slides" / "cmu-1-small-region" / "level-0-frames-0-30.dcm"
        run(
            [
                PY,
                str(SHARED / "tools" / "make_big_slide.py"),
                "--source",
                str(source),
                "--size",
                f"{SIZE}x{SIZE}",
                "--quality",
                "85",
                "--seed",
                "1",
                str(slide),
            ]
        )
    data = OUT / "data"
    if not (data / "s04.zarr").exists():
        data.mkdir(exist_ok=True)
        run([PY, "-m", "viewer.cli", "convert", str(slide), str(data / "s04.zarr")], cwd=REPO)
    dz = OUT / "dz"
    if not (OUT / "dz.dzi").exists():
        shutil.rmtree(OUT / "dz_files", ignore_errors=True)
        run(
            [
                "vips",
                "dzsave",
                str(slide),
                str(dz),
                "--tile-size",
                str(TILE),
                "--overlap",
                "0",
                "--suffix",
                ".jpg[Q=85]",
            ]
        )
    return slide, data, OUT


def tissue_tiles(data: Path) -> list[tuple[int, int]]:
    """Level-0 tiles whose mean is darker than glass (cached in out/tiles04.txt)."""
    cache = OUT / "tiles04.txt"
    if cache.exists():
        return [tuple(map(int, line.split())) for line in cache.read_text().splitlines()]  # type: ignore[misc]
    tiles = []
    columns = -(-SIZE // TILE)
    for row in range(columns):
        for col in range(columns):
            chunk = data / "s04.zarr" / "0" / "c" / "0" / str(row) / str(col)
            whole = (col + 1) * TILE <= SIZE and (row + 1) * TILE <= SIZE
            if whole and chunk.exists() and jpeg_mean(chunk.read_bytes()) < 215:
                tiles.append((col, row))
    cache.write_text("".join(f"{c} {r}\n" for c, r in tiles))
    return tiles


def jpeg_mean(data: bytes) -> float:
    return float(imagecodecs.jpeg8_decode(data).mean())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, cookie: str = "") -> bytes:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return bytes(response.read())


@contextmanager
def server(cmd: list[str], ready_url: str, env: dict[str, str] | None = None) -> Iterator[None]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=log,
        stderr=log,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(ready_url)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read()[-2000:]
                    raise RuntimeError(f"{cmd[:3]} did not start: {tail!r}") from None
                time.sleep(0.2)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@contextmanager
def nginx(root: Path, port: int) -> Iterator[None]:
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(f"""
user root;
worker_processes 2;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 4096; }}
http {{
  include /etc/nginx/mime.types;
  access_log off; sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_requests 1000000;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp};
  uwsgi_temp_path {tmp}; scgi_temp_path {tmp};
  server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
""")
        with server(
            ["nginx", "-c", str(conf), "-g", "daemon off;"], f"http://127.0.0.1:{port}/dz.dzi"
        ):
            yield


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNIT[unit]


def wrk(
    base: str, paths: Path, threads: int, connections: int, seconds: int, cookie: str = ""
) -> dict[str, float]:
    lua = str(HERE / "random_urls.lua")
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        *(["-H", f"Cookie: {cookie}"] if cookie else []),
        "-s",
        lua,
        base,
        "--",
        str(paths),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out)[1])  # type: ignore[index]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out)[1])  # type: ignore[index]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    errors = int(non2xx[1]) if non2xx else 0
    if socket_errors:
        errors += sum(int(v) for v in socket_errors.groups())
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "errors": errors}


@dataclass
class Target:
    key: str
    label: str
    base: str
    paths: Path
    cookie: str = ""  # a logged-in session: authorisation is checked on every tile
    rows: list[dict[str, float]] = field(default_factory=list)


def check_and_warm(target: Target, urls: list[str]) -> None:
    target.paths.write_text("".join(u + "\n" for u in urls))
    for url in urls[:3]:  # every server answers a real JPEG of a tissue tile
        pixels = imagecodecs.jpeg8_decode(get(target.base + url, target.cookie))
        assert pixels.shape == (TILE, TILE, 3) and pixels.mean() < 225, (target.key, url)
    wrk(target.base, target.paths, 2, 16, 3, target.cookie)


def demo_login(base: str) -> str:
    """Log in as the first demo account that sees a slide; returns its session cookie."""
    from share.demo import DEMO_ACCOUNTS

    for account in DEMO_ACCOUNTS:
        body = json.dumps({"username": account.username, "password": account.password})
        request = urllib.request.Request(
            base + "/api/login", body.encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            cookies = response.headers.get_all("Set-Cookie") or []
        cookie = "; ".join(c.split(";", 1)[0] for c in cookies)
        if json.loads(get(base + "/api/slides", cookie)):
            return cookie
    raise RuntimeError("no demo account sees the benchmark slide")


def prepare_accounts(data: Path, env: dict[str, str]) -> None:
    """The demo accounts and slide assignment of ``iain demo``, in a temporary database."""
    from share.config import ShareSettings
    from share.demo import prepare_demo
    from tiling.catalog import Catalog
    from tiling.store import open_data_root

    catalog = Catalog(open_data_root(str(data)))
    catalog.refresh()
    prepare_demo(ShareSettings.from_env(env), [(r.id, r.name) for r in catalog.slides()])


def start_iain(stack: ExitStack, data: Path, workers: int, env: dict[str, str]) -> str:
    """`iain serve` on a free port with its own tile cache, until ``stack`` closes; its URL."""
    port = free_port()
    cache = stack.enter_context(tempfile.TemporaryDirectory(prefix="iain-bench-cache-"))
    cmd = [PY, "-m", "viewer.cli", "serve", "--port", str(port), "--data", str(data)]
    cmd += ["--workers", str(workers), "--cache-dir", cache]
    base = f"http://127.0.0.1:{port}"
    stack.enter_context(server(cmd, base + "/healthz", env=env))
    return base


def tile_grant(base: str, cookie: str, slide_id: str) -> str:
    """The session cookie plus a signed tile grant for ``slide_id`` (share/tile_grants.py)."""
    request = urllib.request.Request(
        f"{base}/api/slides/{slide_id}/tile-grant", headers={"Cookie": cookie}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        cookies = response.headers.get_all("Set-Cookie") or []
    return "; ".join([cookie, *(c.split(";", 1)[0] for c in cookies)])


def start_grants(
    stack: ExitStack,
    share_env: dict[str, str],
    data: Path,
    order: list[tuple[int, int]],
    workers: int,
    enabled: Callable[[str], bool],
) -> list[Target]:
    """IAIN with signed tile grants (granian), and nginx in front of it (`iain nginx-conf`):
    wrk holds a session and a grant (600 s) and asks for /tiles/{id}/0/{row}/{col}."""
    targets: list[Target] = []
    env = {
        **share_env,
        "IAIN_SERVER": "granian",
        "IAIN_AUTH": "1",
        "SHARE_TILE_GRANTS": "1",
        "SHARE_TILE_GRANT_TTL_S": "600",
    }
    base = start_iain(stack, data, workers, env)
    port = int(base.rsplit(":", 1)[1])
    session = demo_login(base)
    (slide_json,) = json.loads(get(base + "/api/slides", session))
    cookie = tile_grant(base, session, slide_json["id"])
    urls = [f"/tiles/{slide_json['id']}/0/{r}/{c}" for c, r in order]
    if enabled("iain-grants"):
        label = "IAIN granian +grants"
        targets.append(Target("iain-grants", label, base, OUT / "urls-grants.txt", cookie))
        check_and_warm(targets[-1], urls)
    if enabled("iain-nginx"):
        run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="iain-nginx-")))
        front = f"127.0.0.1:{free_port()}"
        conf_cmd = [PY, "-m", "viewer.cli", "nginx-conf", "--data", str(data), "--listen", front]
        conf_cmd += ["--upstream", f"127.0.0.1:{port}", "--run-dir", str(run_dir)]
        conf_cmd += ["--workers", str(workers)]
        conf = subprocess.run(
            conf_cmd,
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        ).stdout
        (run_dir / "nginx.conf").write_text(conf)
        nginx_cmd = ["nginx", "-c", str(run_dir / "nginx.conf"), "-p", str(run_dir)]
        nginx_cmd += ["-e", str(run_dir / "error.log"), "-g", "daemon off;"]
        stack.enter_context(server(nginx_cmd, f"http://{front}/healthz"))
        label = "IAIN + nginx grants"
        targets.append(
            Target("iain-nginx", label, f"http://{front}", OUT / "urls-nginx-grants.txt", cookie)
        )
        check_and_warm(targets[-1], urls)
    return targets


def start_all(
    stack: ExitStack,
    slide: Path,
    data: Path,
    dz_root: Path,
    order: list[tuple[int, int]],
    workers: int,
    enabled: Callable[[str], bool],
) -> list[Target]:
    """Start every server (idle ones cost nothing), check and warm each."""
    targets: list[Target] = []
    share_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="iain-share-")))
    share_env = {"SHARE_DATA_DIR": str(share_dir), "IAIN_DATA": str(data)}
    if any(enabled(k) for k in ("iain", "iain-uvicorn", "iain-grants", "iain-nginx")):
        prepare_accounts(data, share_env)
    variants = (
        ("iain", "granian", True),
        ("iain-noauth", "granian", False),
        ("iain-uvicorn", "uvicorn", True),
    )
    if enabled("iain-grants") or enabled("iain-nginx"):
        targets += start_grants(stack, share_env, data, order, workers, enabled)
    for key, http_server, auth in variants:
        if not enabled(key):
            continue
        env = {**share_env, "IAIN_SERVER": http_server, "IAIN_AUTH": "1" if auth else "0"}
        base = start_iain(stack, data, workers, env)
        cookie = demo_login(base) if auth else ""
        (slide_json,) = json.loads(get(base + "/api/slides", cookie))
        urls = [f"/slides/{slide_json['id']}_files/{DZ_MAX}/{c}_{r}.jpeg" for c, r in order]
        label = f"IAIN {http_server}" + (" +auth" if auth else " no auth")
        targets.append(Target(key, label, base, OUT / f"urls-{key}.txt", cookie))
        check_and_warm(targets[-1], urls)
    if enabled("nginx"):
        port = free_port()
        stack.enter_context(nginx(dz_root, port))
        urls = [f"/dz_files/{DZ_MAX}/{c}_{r}.jpg" for c, r in order]
        targets.append(
            Target(
                "nginx", "nginx static (dzsave)", f"http://127.0.0.1:{port}", OUT / "urls-nginx.txt"
            )
        )
        check_and_warm(targets[-1], urls)
    if enabled("stored"):
        port = free_port()
        cmd = [PY, "-m", "benchmarks.peer_stored_tiff", str(slide), str(port), str(workers)]
        c0, r0 = order[0]
        stack.enter_context(server(cmd, f"http://127.0.0.1:{port}/{c0}_{r0}.jpeg"))
        urls = [f"/{c}_{r}.jpeg" for c, r in order]
        targets.append(
            Target(
                "stored", "stored TIFF bytes", f"http://127.0.0.1:{port}", OUT / "urls-stored.txt"
            )
        )
        check_and_warm(targets[-1], urls)
    if enabled("deepzoom"):
        port = free_port()
        cmd = [PY, "-m", "benchmarks.peer_deepzoom", str(slide), str(port), str(workers)]
        stack.enter_context(server(cmd, f"http://127.0.0.1:{port}/0/0_0.jpeg"))
        urls = [f"/{DZ_MAX}/{c}_{r}.jpeg" for c, r in order]
        targets.append(
            Target(
                "deepzoom",
                "OpenSlide DeepZoom",
                f"http://127.0.0.1:{port}",
                OUT / "urls-deepzoom.txt",
            )
        )
        check_and_warm(targets[-1], urls)
    return targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None, help="subset of servers to run")
    args = parser.parse_args(argv)
    slide, data, dz_root = prepare()
    tiles = tissue_tiles(data)
    order = [tiles[i] for i in np.random.default_rng(4).permutation(len(tiles))]
    with open("/proc/loadavg") as handle:
        load = handle.read().split()[:3]
    print(
        f"{len(tiles)} level-0 tissue tiles; {args.duration} s per cell; "
        f"{os.cpu_count()} cores shared with wrk; load average {' '.join(load)}",
        flush=True,
    )
    want = set(args.only) if args.only else None
    with ExitStack() as stack:
        targets = start_all(
            stack,
            slide,
            data,
            dz_root,
            order,
            args.workers,
            lambda name: want is None or name in want,
        )
        # servers interleaved within each concurrency: a burst of foreign load on the
        # shared cores hits neighbouring cells, not one server's whole row
        for threads, connections in CONCURRENCY:
            for target in targets:
                result = wrk(
                    target.base, target.paths, threads, connections, args.duration, target.cookie
                )
                result["c"] = connections
                target.rows.append(result)
                print(
                    f"{target.label:<28} c={connections:<3} {result['rps']:>9.0f} req/s"
                    f"  p50 {result['p50_ms']:6.2f} ms  p99 {result['p99_ms']:6.2f} ms"
                    f"  errors {result['errors']:.0f}",
                    flush=True,
                )
    with open("/proc/loadavg") as handle:
        print("load average after:", " ".join(handle.read().split()[:3]))
    results = {t.key: t.rows for t in targets}
    (OUT / "serve.json").write_text(json.dumps(results, indent=2))
    peers = ("iain-noauth", "iain-uvicorn", "nginx", "stored", "deepzoom")
    for main_key in ("iain", "iain-grants", "iain-nginx"):
        if main_key not in results:
            continue
        print(f"\nratios at each concurrency ({main_key} / peer req/s):")
        for peer in peers:
            if peer not in results:
                continue
            pairs = zip(results[main_key], results[peer], strict=True)
            cells = [f"c={a['c']:.0f}: {a['rps'] / b['rps']:5.2f}x" for a, b in pairs]
            print(f"  {main_key} / {peer:<12} " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
