"""Three real IAIN nodes on loopback: Caen, Rouen, Lille, each ``viewer.app`` in its own uvicorn
process with its own SQLite database, users and node key, peers configured with each other's
public keys; every node mails its notices to one real SMTP server (``fed_smtp``). Caen holds
one real slide: the canary SVS (CMU-1-Small-Region's pixels, with identifiers planted in its
label, macro, properties and file name) through the real converter.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from share.accounts import Accounts
from share.config import ShareSettings
from share.db import open_database
from share.demo_nodes import DemoNode, write_node_configs
from tests.share.conftest import login
from tests.share.conftest_federation import CanarySlide, free_port, start_node, wait_node
from tests.share.opinion_smtp import SmtpSink

REPO_ROOT = Path(__file__).resolve().parents[2]
CENTRES = ("caen", "rouen", "lille")
USERS = {  # username -> (centre, role); password = username + "-password"
    "caen-patho": ("caen", "pathologist"),
    "caen-admin": ("caen", "admin"),
    "rouen-patho": ("rouen", "pathologist"),
    "lille-patho": ("lille", "pathologist"),
    "lille-admin": ("lille", "admin"),
    "lille-ml": ("lille", "ml"),
}


@dataclass(frozen=True)
class FedNode:
    name: str
    url: str
    home: Path

    def client(self, username: str | None = None) -> tuple[httpx.Client, dict[str, str]]:
        """A cookie jar on this node, logged in as ``username`` (CSRF headers returned)."""
        client = httpx.Client(base_url=self.url, timeout=20)
        headers = login(client, username) if username else {}
        return client, headers


def _settings(home: Path, name: str) -> ShareSettings:
    return ShareSettings(
        data_dir=home, default_centre=name, argon2_time_cost=1, argon2_memory_kib=1024
    )


def _start(node: DemoNode, smtp_port: int) -> subprocess.Popen[bytes]:
    env = (
        os.environ
        | node.env()
        | {
            "PYTHONPATH": str(REPO_ROOT),
            "IAIN_DATA": str(node.slides),
            "SHARE_ARGON2_TIME_COST": "1",
            "SHARE_ARGON2_MEMORY_KIB": "1024",
            "SHARE_SMTP_HOST": "127.0.0.1",
            "SHARE_SMTP_PORT": str(smtp_port),
        }
    )
    return start_node("viewer.app:create_app_from_env", env, node.port, node.home / "node.log")


@pytest.fixture(scope="module")
def fed_smtp() -> Iterator[SmtpSink]:
    """The SMTP server every node of ``fed_nodes`` mails to (users with an address only)."""
    with SmtpSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def fed_nodes(
    canary_slide: CanarySlide, fed_smtp: SmtpSink, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, FedNode]]:
    from tiling.convert import build_pyramid
    from wsi import open_slide

    base = tmp_path_factory.mktemp("fednodes")
    # keys and peers files exactly as `iain demo` writes them for its three nodes
    demo = [DemoNode(name, free_port(), base / name) for name in CENTRES]
    write_node_configs(demo)
    nodes: dict[str, FedNode] = {}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for node in demo:
            name, home = node.centre, node.home
            if name == "caen":  # the slide keeps its identifying file name as its catalogue name
                reader = open_slide(canary_slide.path)
                try:
                    build_pyramid(reader, node.slides / f"{canary_slide.path.stem}.zarr")
                finally:
                    reader.close()
            settings = _settings(home, name)
            db = open_database(settings.url)  # migrates
            accounts = Accounts(db, settings)
            accounts.ensure_centres()
            for user, (centre, role) in USERS.items():
                if centre == name:
                    accounts.add_user(user, centre, role, f"{user}-password")
            db.dispose()
            processes.append(_start(node, fed_smtp.port))
            nodes[name] = FedNode(name, node.url, home)
        for process, node in zip(processes, nodes.values(), strict=True):
            wait_node(node.url, process, node.home / "node.log", ("/healthz", 200), 60)
        yield nodes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
