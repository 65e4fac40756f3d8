"""``iain serve`` and ``iain demo``: argparse, then one call.

``serve --host H --port P --data DIR|s3://bucket/prefix [--workers N]`` serves every
``*.zarr`` pyramid under DATA. ``nginx-conf --data DIR`` prints an nginx front for it
(:mod:`viewer.nginx`). ``demo --slides DIR --data DIR`` first converts every slide
of DIR that :func:`wsi.open_slide` accepts into ``DATA/<stem>.zarr`` (skipping those
already there, reporting failures one line each), then serves three federated nodes, Caen
on 127.0.0.1:8000 (the main URL), Rouen on :8001 and Lille on :8002, each with its own
folder, database and node key under ``DATA/nodes/`` and its centre's share of the slides
(:mod:`share.demo_nodes`). ``--single-node`` serves one node hosting all three centres.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tiling.errors import TilingError
from viewer.config import ServerSettings
from viewer.errors import ViewerError
from wsi.errors import SlideError

if TYPE_CHECKING:
    from share.demo import DemoAccount
    from share.demo_nodes import DemoNode

__all__ = ["main"]

logger = logging.getLogger(__name__)
LOGINS_HEADER = "demo logins (never use these passwords elsewhere):"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iain")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve converted slides")
    serve.add_argument("--host", help="default 127.0.0.1 (IAIN_HOST)")
    serve.add_argument("--port", type=int, help="default 8000 (IAIN_PORT)")
    serve.add_argument("--data", required=True, help="directory or s3:// URL of *.zarr pyramids")
    serve.add_argument("--workers", type=int, help="worker processes, default 1 (IAIN_WORKERS)")
    serve.add_argument("--cache-dir", help="disk cache of computed tiles (IAIN_CACHE_DIR)")
    nginx = commands.add_parser(
        "nginx-conf", help="print an nginx front that sends granted tiles (SHARE_TILE_GRANTS=1)"
    )
    nginx.add_argument("--data", required=True, help="the directory `iain serve --data` serves")
    nginx.add_argument("--listen", default="127.0.0.1:8080", help="default 127.0.0.1:8080")
    nginx.add_argument("--upstream", default="127.0.0.1:8000", help="where `iain serve` listens")
    nginx.add_argument("--run-dir", type=Path, default=Path("nginx"), help="pid, logs, temp")
    nginx.add_argument("--workers", type=int, default=2, help="nginx worker processes")
    demo = commands.add_parser("demo", help="convert the sample slides and serve them")
    demo.add_argument("--slides", required=True, type=Path)
    demo.add_argument("--data", required=True, type=Path)
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--no-serve", action="store_true", help="convert only (tests)")
    demo.add_argument(
        "--single-node",
        action="store_true",
        help="one node hosting the three centres (default: three federated nodes)",
    )
    return parser


def convert_all(slides: Path, data: Path) -> tuple[list[str], list[str]]:
    """Convert every readable slide of ``slides`` into ``data``; (converted, failed) names."""
    from tiling.convert import build_pyramid
    from wsi import open_slide

    data.mkdir(parents=True, exist_ok=True)
    converted: list[str] = []
    failed: list[str] = []
    for source in sorted(slides.iterdir()):
        if source.name.startswith(".") or source.name.lower().endswith((".md", ".txt")):
            continue
        target = data / f"{source.stem}.zarr"
        if target.exists():
            continue
        try:
            reader = open_slide(source)
            try:
                build_pyramid(reader, target)
            finally:
                reader.close()
        except (SlideError, TilingError, OSError) as exc:  # one bad slide must not stop the demo
            code = getattr(exc, "code", type(exc).__name__)
            print(f"skipped {source.name}: {code}: {str(exc)[:200]}", file=sys.stderr)
            failed.append(source.name)
            continue
        print(f"converted {source.name}", flush=True)
        converted.append(source.name)
    return converted, failed


def _login_line(a: DemoAccount, indent: str) -> str:
    """One row of the demo logins table."""
    return f"{indent}{a.username:<12} {a.password:<18} {a.role:<12} {a.centre}"


def _demo_accounts(data: Path) -> None:
    """Spread the converted slides over the centres and print the demo logins."""
    from share.config import ShareSettings
    from share.demo import prepare_demo
    from tiling.catalog import Catalog
    from tiling.store import open_data_root

    catalog = Catalog(open_data_root(str(data)))
    catalog.refresh()
    share = ShareSettings.from_env({**os.environ, "IAIN_DATA": str(data)})
    accounts = prepare_demo(share, [(ref.id, ref.name) for ref in catalog.slides()])
    lines = [LOGINS_HEADER]
    lines += [_login_line(a, "  ") for a in accounts]
    print("\n".join(lines), flush=True)  # one block, after the set-up's log lines


def _three_node_demo(data: Path, port: int) -> list[tuple[DemoNode, list[str]]]:
    """Split the converted slides over the three nodes, write their keys and peers files,
    migrate their databases and print the logins; returns each node's ``iain serve`` command."""
    from share.demo_nodes import place_slides, plan_nodes, prepare_node, write_node_configs
    from tiling.catalog import Catalog
    from tiling.store import open_data_root

    nodes = plan_nodes(data, port)
    write_node_configs(nodes)
    place_slides(nodes, sorted(data.glob("*.zarr")))
    # printed as one block once every node is set up: no set-up log line (stderr) falls
    # between a node and its logins
    lines = [LOGINS_HEADER]
    commands = []
    for node in nodes:
        catalog = Catalog(open_data_root(str(node.slides)))
        catalog.refresh()
        refs = catalog.slides()
        accounts = prepare_node(node, [(ref.id, ref.name) for ref in refs], os.environ)
        lines.append(f"  {node.centre} node {node.url}/  ({len(refs)} slides)")
        lines += [_login_line(a, "    ") for a in accounts]
        command = [sys.executable, "-m", "viewer", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(node.port), "--data", str(node.slides)]
        command += ["--cache-dir", str(node.home / "cache")]
        commands.append((node, command))
    print("\n".join(lines), flush=True)
    return commands


def _serve_nodes(commands: list[tuple[DemoNode, list[str]]]) -> int:
    """Run one ``iain serve`` process per node until Ctrl-C or until one of them stops."""
    processes = [
        subprocess.Popen(command, env={**os.environ, **node.env()}) for node, command in commands
    ]
    main_url = commands[0][0].url
    print(f"IAIN demo: open {main_url}/ (Caen; Rouen and Lille are its peers)", flush=True)
    try:
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    return max((p.returncode or 0) for p in processes)


def _nginx_conf(args: argparse.Namespace) -> int:
    from share.config import ShareSettings
    from share.tile_grants import load_secret
    from viewer.nginx import local_stores, render_nginx_conf

    settings = ShareSettings.from_env(os.environ)
    print(
        render_nginx_conf(
            listen=args.listen,
            upstream=args.upstream,
            stores=local_stores(args.data),
            secret=load_secret(settings.data_dir),
            run_dir=args.run_dir,
            workers=args.workers,
        ),
        end="",
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Alembic logs one INFO line per plugin and migration step: ~20 per node start.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from viewer.serve import run_server

    try:
        if args.command == "serve":
            given = {
                "data": args.data,
                "host": args.host,
                "port": args.port,
                "workers": args.workers,
                "cache_dir": args.cache_dir,
            }
            settings = ServerSettings.from_env(os.environ).with_(
                **{k: v for k, v in given.items() if v is not None}
            )
            print(f"IAIN serving {settings.data} at http://{settings.host}:{settings.port}/")
            run_server(settings)
            return 0
        if args.command == "nginx-conf":
            return _nginx_conf(args)
        if not args.slides.is_dir():
            print(f"iain demo: error: {args.slides} is not a directory", file=sys.stderr)
            return 2
        convert_all(args.slides, args.data)
        auth = os.environ.get("IAIN_AUTH", "1") != "0"
        if auth and not args.single_node:  # federation needs sessions: three nodes need auth
            commands = _three_node_demo(args.data, args.port)
            return 0 if args.no_serve else _serve_nodes(commands)
        if auth:
            _demo_accounts(args.data)
        if args.no_serve:
            return 0
        settings = ServerSettings.from_env(os.environ).with_(
            data=str(args.data), host="127.0.0.1", port=args.port
        )
        print(f"IAIN demo: open http://127.0.0.1:{settings.port}/", flush=True)
        run_server(settings)
    except ViewerError as exc:
        print(f"iain {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        print(f"iain {args.command}: error: {exc.name} is not available yet", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
