"""The three-node demo: Caen, Rouen and Lille as three IAIN nodes on one machine.

Each node has its own folder under ``DATA/nodes/<centre>/``: SQLite database, Ed25519 node key,
peers file naming the two others (loopback URLs and their public keys), the derived pyramids of
its shares, a tile cache, and ``slides/`` holding its centre's slides (links to the converted
pyramids, split round-robin like the single-node demo assigns them). Caen stays on port 8000.
Known passwords: a demo, never production.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from share.accounts import Accounts
from share.config import DEFAULT_CENTRES, ShareSettings
from share.db import open_database
from share.demo import DEMO_ACCOUNTS, DemoAccount
from share.errors import ConflictError
from share.signing import NodeKey

__all__ = [
    "DEMO_NODE_ACCOUNTS",
    "DemoNode",
    "place_slides",
    "plan_nodes",
    "prepare_node",
    "write_node_configs",
]

# Each centre's admin reviews its own slides' accesses: one per node.
DEMO_NODE_ACCOUNTS: tuple[DemoAccount, ...] = (
    *DEMO_ACCOUNTS,
    DemoAccount("rouen-admin", "rouen", "admin", "demo-rouen-admin"),
    DemoAccount("lille-admin", "lille", "admin", "demo-lille-admin"),
)


@dataclass(frozen=True, slots=True)
class DemoNode:
    """One centre's node: where it keeps its state and where it listens."""

    centre: str
    port: int
    home: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def slides(self) -> Path:
        return self.home / "slides"

    @property
    def key_file(self) -> Path:
        return self.home / "node.pem"

    @property
    def peers_file(self) -> Path:
        return self.home / "peers.json"

    def env(self) -> dict[str, str]:
        """What the node's ``iain serve`` process needs beside its command line."""
        return {
            "SHARE_DATA_DIR": str(self.home),
            "SHARE_DEFAULT_CENTRE": self.centre,
            "SHARE_FEDERATION_FILE": str(self.peers_file),
            "SHARE_NODE_KEY_FILE": str(self.key_file),
            "IAIN_CACHE_DIR": str(self.home / "cache"),
        }

    def share_settings(self, environ: Mapping[str, str] | None = None) -> ShareSettings:
        return ShareSettings.from_env({**(environ or {}), **self.env()})


def plan_nodes(data: Path, base_port: int = 8000) -> list[DemoNode]:
    """Caen on ``base_port`` (the main URL), Rouen and Lille on the next two."""
    root = Path(data).resolve() / "nodes"
    return [
        DemoNode(centre, base_port + i, root / centre) for i, centre in enumerate(DEFAULT_CENTRES)
    ]


def write_node_configs(nodes: Sequence[DemoNode]) -> None:
    """Give each node a key (kept across runs) and a peers file naming every other node."""
    keys: dict[str, NodeKey] = {}
    for node in nodes:
        node.slides.mkdir(parents=True, exist_ok=True)
        if node.key_file.exists():
            keys[node.centre] = NodeKey.from_file(node.centre, node.key_file)
            continue
        key = NodeKey.generate(node.centre)
        node.key_file.write_bytes(key.private_pem())
        node.key_file.chmod(0o600)
        keys[node.centre] = key
    for node in nodes:
        peers = [
            {"name": other.centre, "url": other.url, "public_key": keys[other.centre].public_pem()}
            for other in nodes
            if other.centre != node.centre
        ]
        node.peers_file.write_text(json.dumps({"node": node.centre, "peers": peers}, indent=1))


def place_slides(nodes: Sequence[DemoNode], pyramids: Sequence[Path]) -> dict[str, str]:
    """Link each converted pyramid into one node's ``slides/`` (sorted names, round-robin);
    returns pyramid name -> centre. Links left by an earlier split are replaced."""
    for node in nodes:
        for old in node.slides.glob("*.zarr"):
            if old.is_symlink():
                old.unlink()
    out = {}
    for i, pyramid in enumerate(sorted(pyramids, key=lambda p: p.name)):
        node = nodes[i % len(nodes)]
        link = node.slides / pyramid.name
        os.symlink(os.path.relpath(pyramid.resolve(), node.slides), link)
        out[pyramid.name] = node.centre
    return out


def prepare_node(
    node: DemoNode, slides: Sequence[tuple[str, str]], environ: Mapping[str, str] | None = None
) -> list[DemoAccount]:
    """Migrate the node's database, register its ``(slide_id, name)`` slides to its centre and
    create its centre's demo accounts; returns them for printing."""
    settings = node.share_settings(environ)
    db = open_database(settings.url)
    try:
        accounts = Accounts(db, settings)
        accounts.ensure_centres()
        accounts.register_slides(slides, centre=node.centre)
        mine = [a for a in DEMO_NODE_ACCOUNTS if a.centre == node.centre]
        for account in mine:
            with contextlib.suppress(ConflictError):
                accounts.add_user(account.username, account.centre, account.role, account.password)
        return mine
    finally:
        db.dispose()
