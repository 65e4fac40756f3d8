"""``iain serve`` as deployed: a real process, several workers, keep-alive latency."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.viewer.conftest import free_port, wait_ready
from viewer.__main__ import main


@pytest.fixture(scope="module", params=["uvicorn", "granian"])
def two_workers(
    request: pytest.FixtureRequest, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    cache = tmp_path_factory.mktemp("serve-cache")
    log = (cache / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "viewer.cli",
            "serve",
            "--port",
            str(port),
            "--data",
            str(data_dir),
            "--workers",
            "2",
            "--cache-dir",
            str(cache),
        ],
        # asyncio's loop is where uvicorn#3149 bites (uvloop sets TCP_NODELAY itself)
        # IAIN_AUTH=0: this measures serving; sessions are tested in tests/share/test_app.py
        env={**os.environ, "IAIN_LOOP": "asyncio", "IAIN_AUTH": "0", "IAIN_SERVER": request.param},
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, timeout_s=60)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
        log.close()


def test_keep_alive_requests_are_fast_with_several_workers(
    two_workers: str, slide_ids: dict[str, str]
) -> None:
    """uvicorn#3149: without TCP_NODELAY each keep-alive response waits ~40 ms (Nagle)."""
    slide = slide_ids["alpha"]
    with httpx.Client(base_url=two_workers) as http:
        for _ in range(5):  # warm up both workers' connections
            assert http.get(f"/slides/{slide}_files/10/0_0.jpeg").status_code == 200
        timings = []
        for i in range(40):
            started = time.perf_counter()
            response = http.get(f"/slides/{slide}_files/10/{i % 3}_{i % 2}.jpeg")
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200
    timings.sort()
    assert timings[len(timings) // 2] < 0.020, timings


def test_every_worker_answers_the_same(two_workers: str, slide_ids: dict[str, str]) -> None:
    """Fresh connections land on either worker; ids, ETags and bytes agree."""
    slide = slide_ids["alpha"]
    seen = set()
    for _ in range(12):
        with httpx.Client(base_url=two_workers) as http:
            ids = tuple(s["id"] for s in http.get("/api/slides").json())
            tile = http.get(f"/slides/{slide}_files/10/3_2.jpeg")
            seen.add((ids, tile.headers["etag"], tile.content))
    assert len(seen) == 1


def test_cli_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["demo", "--slides", str(tmp_path / "none"), "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    with pytest.raises(SystemExit):
        main(["serve"])  # argparse: --data is required
