"""Fixtures for the federation tests: a canary slide and an IAIN pyramid built from it.

The canary slide is a real Aperio SVS (CMU-1-Small-Region's pixels) rewritten with tifffile so
that its vendor properties, label, macro and file name carry planted identifiers. The pyramid
writer below is deliberately *leaky*: it stores every vendor property, the source name and
sha256, the associated images, and JPEG comments / EXIF in the chunks, i.e. the worst a
converter could do, so the de-identification is tested against everything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image, ImageDraw

from share.federation import FederationAccess, FederationConfig, JsonShareFile
from share.federation_errors import FederationError
from share.federation_router import (
    OwnerState,
    RecipientState,
    current_caller,
    federation_error_handler,
    owner_router,
    recipient_router,
)
from share.peers import CachingPeerClient, Caller, HttpPeerClient
from share.signing import NodeKey
from tiling.layout import ASSOCIATED_GROUP, IAIN_ATTR, JPEG_CODEC_NAME, chunk_key

REPO_ROOT = Path(__file__).resolve().parents[2]

CANARIES = (
    "CANARY-PATIENT-4711",
    "1970-01-01",
    "BC-CANARY-0042",
    "CANARY-OPERATOR-jdoe",
    "Hopital-Canary",
)
CANARY_FILE_NAME = "CANARY-PATIENT-4711_1970-01-01_BC-CANARY-0042.svs"
TILE = 256
RECIPIENT_CACHE_TTL_S = 1.0  # the nodes' tile cache: short, so the revocation test is quick


@dataclass(frozen=True)
class CanarySlide:
    path: Path
    label: np.ndarray  # (y, x, 3) uint8 as written
    macro: np.ndarray
    sha256: str


def _draw_canary_image(width: int, height: int, base: np.ndarray | None) -> np.ndarray:
    image = Image.new("RGB", (width, height), "white") if base is None else Image.fromarray(base)
    draw = ImageDraw.Draw(image)
    for line, text in enumerate(CANARIES):
        draw.text((10, 10 + 22 * line), text, fill=(0, 0, 0))
    rng = np.random.default_rng(4711)
    x = 10
    for bar in rng.integers(1, 5, size=40):  # a barcode-looking strip
        draw.rectangle((x, height - 80, x + int(bar), height - 20), fill=(0, 0, 0))
        x += int(bar) + 3
    return np.asarray(image, dtype=np.uint8).copy()


def write_canary_svs(source_svs: Path, directory: Path) -> CanarySlide:
    """Rewrite ``source_svs`` as an Aperio SVS whose metadata and images carry the canaries."""
    import tifffile  # lazy here and below: the uvicorn node processes import this module too

    with tifffile.TiffFile(source_svs) as tif:
        level0 = tif.pages[0].asarray()
        thumbnail = tif.pages[1].asarray()
        macro_src = tif.pages[3].asarray()
    height, width = level0.shape[:2]
    label = _draw_canary_image(387, 463, None)
    macro = _draw_canary_image(macro_src.shape[1], macro_src.shape[0], macro_src)
    props = (
        "AppMag = 20|MPP = 0.4990|ScanScope ID = SS-CANARY-0042|Filename = CANARY-PATIENT-4711"
        "|Date = 1970-01-01|Time = 09:59:15|User = CANARY-OPERATOR-jdoe|Barcode = BC-CANARY-0042"
        "|Institution = Hopital-Canary"
    )
    description = (
        f"Aperio Image Library v11.2.1 \r\n46000x32914 [0,0 {width}x{height}] (240x240) "
        f"JPEG/RGB Q=70|{props}"
    )
    path = directory / CANARY_FILE_NAME
    with tifffile.TiffWriter(path) as out:
        out.write(
            level0,
            tile=(240, 240),
            compression="jpeg",
            compressionargs={"level": 85},
            photometric="rgb",
            description=description,
            metadata=None,
        )
        out.write(
            thumbnail,
            compression="jpeg",
            photometric="rgb",
            description=f"Aperio Image Library v11.2.1 \n{width}x{height} -> "
            f"{thumbnail.shape[1]}x{thumbnail.shape[0]} - |{props}",
            metadata=None,
        )
        out.write(
            label,
            compression="lzw",
            photometric="rgb",
            subfiletype=1,
            description="Aperio Image Library v11.2.1 \nlabel 387x463",
            metadata=None,
        )
        out.write(
            macro,
            compression="jpeg",
            photometric="rgb",
            subfiletype=9,
            description=f"Aperio Image Library v11.2.1 \nmacro {macro.shape[1]}x{macro.shape[0]}",
            metadata=None,
        )
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return CanarySlide(path=path, label=label, macro=macro, sha256=sha)


def _jpeg(tile: np.ndarray, *, comment: str) -> bytes:
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E] = comment  # ImageDescription inside EXIF (APP1)
    exif[0x0132] = "1970:01:01 00:00:00"
    Image.fromarray(tile).save(
        buffer, "JPEG", quality=85, comment=comment.encode(), exif=exif.tobytes()
    )
    return buffer.getvalue() + comment.encode()  # trailing bytes after EOI, too


def _array_json(
    shape: tuple[int, int, int], chunk: tuple[int, int, int], leak: str
) -> dict[str, object]:
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(shape),
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(chunk)}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 255,
        "codecs": [
            {"name": "transpose", "configuration": {"order": [1, 2, 0]}},
            {"name": JPEG_CODEC_NAME, "configuration": {"quality": 85, "note": leak}},
        ],
        "attributes": {"source": leak},
        "dimension_names": ["c", "y", "x"],
    }


def write_leaky_pyramid(slide_path: Path, out: Path, *, max_side: int = 4096) -> Path:
    """A pyramid in the tiling/layout.py shape, carrying every identifier a converter could.

    Pixels are the top-left ``max_side`` square of level 0 at most (keeps real slides quick).
    """
    import openslide

    slide = openslide.OpenSlide(slide_path)
    try:
        width, height = (min(side, max_side) for side in slide.dimensions)
        rgba = slide.read_region((0, 0), 0, (width, height))
        image = rgba.convert("RGB")
        props = dict(slide.properties)
        associated = {name: img.convert("RGB") for name, img in slide.associated_images.items()}
    finally:
        slide.close()
    sha = hashlib.sha256(slide_path.read_bytes()).hexdigest()
    leak = f"{slide_path.name} {sha}"
    out.mkdir(parents=True)
    level, datasets = 0, []
    while True:
        array = np.asarray(image, dtype=np.uint8)
        lvl_h, lvl_w = array.shape[:2]
        (out / str(level)).mkdir()
        (out / str(level) / "zarr.json").write_text(
            json.dumps(_array_json((3, lvl_h, lvl_w), (3, TILE, TILE), leak))
        )
        for row in range(math.ceil(lvl_h / TILE)):
            for col in range(math.ceil(lvl_w / TILE)):
                tile = np.full((TILE, TILE, 3), 255, dtype=np.uint8)
                part = array[row * TILE : (row + 1) * TILE, col * TILE : (col + 1) * TILE]
                tile[: part.shape[0], : part.shape[1]] = part
                key = out / chunk_key(level, col, row)
                key.parent.mkdir(parents=True, exist_ok=True)
                key.write_bytes(_jpeg(tile, comment=f"{leak} {props.get('aperio.User', '')}"))
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [1.0, 0.499 * 2**level, 0.499 * 2**level]}
                ],
            }
        )
        if lvl_w <= TILE and lvl_h <= TILE:
            break
        image = image.resize((math.ceil(lvl_w / 2), math.ceil(lvl_h / 2)), Image.Resampling.BOX)
        level += 1
    root = {
        "zarr_format": 3,
        "node_type": "group",
        "attributes": {
            "ome": {
                "version": "0.5",
                "multiscales": [
                    {
                        "name": slide_path.stem,
                        "axes": [
                            {"name": "c", "type": "channel"},
                            {"name": "y", "type": "space", "unit": "micrometer"},
                            {"name": "x", "type": "space", "unit": "micrometer"},
                        ],
                        "datasets": datasets,
                        "metadata": {"source": leak},
                    }
                ],
            },
            IAIN_ATTR: {
                "source_name": slide_path.name,
                "source_sha256": sha,
                "converted_at": "1970-01-01T00:00:00Z",
                "mpp_x": float(props.get("openslide.mpp-x", 0) or 0) or None,
                "mpp_y": float(props.get("openslide.mpp-y", 0) or 0) or None,
                "objective_power": float(props.get("openslide.objective-power", 0) or 0) or None,
                "vendor": props.get("openslide.vendor"),
                "properties": props,
                "barcode": "BC-CANARY-0042",
            },
        },
    }
    (out / "zarr.json").write_text(json.dumps(root))
    group = out / ASSOCIATED_GROUP
    group.mkdir()
    (group / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group"}))
    for name, img in associated.items():
        (group / name).mkdir()
        (group / name / "raw.rgb").write_bytes(np.asarray(img, dtype=np.uint8).tobytes())
        img.save(group / name / "image.png")
    return out


@pytest.fixture(scope="module")
def canary_slide(slides_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> CanarySlide:
    return write_canary_svs(slides_dir / "CMU-1-Small-Region.svs", tmp_path_factory.mktemp("svs"))


@pytest.fixture(scope="module")
def converted_canary(canary_slide: CanarySlide, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The canary slide through the real converter (``tiling.convert.build_pyramid``)."""
    from tiling.convert import build_pyramid
    from wsi import open_slide

    out = tmp_path_factory.mktemp("conv") / "slide.zarr"
    reader = open_slide(canary_slide.path)
    try:
        build_pyramid(reader, out)
    finally:
        reader.close()
    return out


@pytest.fixture(scope="module")
def canary_pyramid(canary_slide: CanarySlide, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_leaky_pyramid(canary_slide.path, tmp_path_factory.mktemp("pyr") / "slide.zarr")


# ------------------------------------------------------------------ federated nodes on loopback


def node_app() -> FastAPI:
    """One IAIN node (owner and recipient routes) configured from the environment.

    Started by the tests as ``uvicorn --factory tests.share.conftest_federation:node_app``;
    ``FED_TEST_*`` stand in for what the accounts and storage wiring will provide.
    """
    config = FederationConfig.from_env()
    key = NodeKey.from_env()
    pyramids = Path(os.environ["FED_TEST_PYRAMIDS"])
    audit_file = Path(os.environ["FED_TEST_AUDIT"])
    audit_lock = threading.Lock()

    def audit(access: FederationAccess) -> None:
        record = dataclasses.asdict(access) | {"at": access.at.isoformat()}
        record["what"] = "tile {}/{}_{}".format(*access.tile) if access.tile else access.action
        with audit_lock, audit_file.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    app = FastAPI()
    app.state.federation_owner = OwnerState(
        config=config,
        shares=JsonShareFile(os.environ["FED_TEST_SHARES"]),
        pyramid_for=lambda share: pyramids / share.share_id,
        audit=audit,
    )
    ttl_s = float(os.environ.get("FED_TEST_CACHE_TTL_S", "30"))
    app.state.federation_recipient = RecipientState(
        clients={
            name: CachingPeerClient(HttpPeerClient(key, peer), ttl_s=ttl_s)
            for name, peer in config.peers.items()
        }
    )
    groups = tuple(g for g in os.environ.get("FED_TEST_GROUPS", "").split(",") if g)
    user = os.environ["FED_TEST_USER"]
    app.dependency_overrides[current_caller] = lambda: Caller(user, groups)
    app.include_router(owner_router)
    app.include_router(recipient_router)
    app.add_exception_handler(FederationError, federation_error_handler)
    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Node:
    name: str
    url: str
    key: NodeKey
    shares: JsonShareFile
    audit: Path
    pyramids: Path


def start_node(factory: str, env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """uvicorn serving the app ``factory`` builds, on 127.0.0.1:``port``, output to ``log``."""
    command = [sys.executable, "-m", "uvicorn", "--factory", factory, "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "warning"]
    with log.open("wb") as handle:
        return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=handle, stderr=handle)


def wait_node(
    url: str,
    process: subprocess.Popen[bytes],
    log: Path,
    ready: tuple[str, int] = ("/federation/shares", 401),
    timeout_s: float = 30,
) -> None:
    """Until GET ``url`` + ``ready[0]`` answers ``ready[1]``; fails with the log's tail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"node exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + ready[0], timeout=1).status_code == ready[1]:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"node at {url} did not start: {log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    """Caen, Rouen, Lille: three real uvicorn processes on 127.0.0.1, each knowing the others.

    Rouen's user is deliberately named ``dr.lille`` too: a same-named user at another centre.
    """
    base = tmp_path_factory.mktemp("nodes")
    keys = {name: NodeKey.generate(name) for name in ("caen", "rouen", "lille")}
    users = {"caen": "dr.caen", "rouen": "dr.lille", "lille": "dr.lille"}
    ports = {name: free_port() for name in keys}
    nodes: dict[str, Node] = {}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, key in keys.items():
            home = base / name
            (home / "pyramids").mkdir(parents=True)
            (home / "node.pem").write_bytes(key.private_pem())
            (home / "node.pem").chmod(0o600)
            peers = [
                {
                    "name": other,
                    "url": f"http://127.0.0.1:{ports[other]}",
                    "public_key": k.public_pem(),
                }
                for other, k in keys.items()
                if other != name
            ]
            (home / "federation.json").write_text(json.dumps({"node": name, "peers": peers}))
            env = os.environ | {
                "PYTHONPATH": str(REPO_ROOT),
                "SHARE_NODE_NAME": name,
                "SHARE_NODE_KEY_FILE": str(home / "node.pem"),
                "SHARE_FEDERATION_FILE": str(home / "federation.json"),
                "FED_TEST_SHARES": str(home / "shares.json"),
                "FED_TEST_PYRAMIDS": str(home / "pyramids"),
                "FED_TEST_AUDIT": str(home / "audit.jsonl"),
                "FED_TEST_USER": users[name],
                "FED_TEST_GROUPS": "uropath",
                "FED_TEST_CACHE_TTL_S": str(RECIPIENT_CACHE_TTL_S),
            }
            processes.append(
                start_node(
                    "tests.share.conftest_federation:node_app",
                    env,
                    ports[name],
                    home / "uvicorn.log",
                )
            )
            nodes[name] = Node(
                name=name,
                url=f"http://127.0.0.1:{ports[name]}",
                key=key,
                shares=JsonShareFile(home / "shares.json"),
                audit=home / "audit.jsonl",
                pyramids=home / "pyramids",
            )
        for process, node in zip(processes, nodes.values(), strict=True):
            wait_node(node.url, process, base / node.name / "uvicorn.log")
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
