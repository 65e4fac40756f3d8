"""``iain nginx-conf``: an nginx front for ``iain serve`` that sends granted tiles itself.

Why: the tile a viewer asks for most is a stored chunk, and a stored chunk is a complete
JPEG file on disk. nginx sends files faster than any Python server, and its
``secure_link`` module can check the signed tile grant of ``share/tile_grants.py`` per
request (md5 of expiry + slide id + session cookie + secret), so the authorisation stays on
every tile. Every other request, and a ``/tiles/`` chunk that is not on disk (glass never
written), goes to IAIN, which checks the same grant.

The configuration names each slide's pyramid directory (a ``map`` from slide id), so run
it again (and ``nginx -s reload``) after converting new slides; a slide missing from the
map is still served, by IAIN. Only local pyramids can be named; ``s3://`` data is all IAIN.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Mapping
from pathlib import Path

from tiling.catalog import Catalog
from tiling.store import open_data_root
from viewer.errors import ViewerError

__all__ = ["local_stores", "render_nginx_conf"]

_SAFE_PATH = re.compile(r"[A-Za-z0-9_./@+-]+")
_SAFE_SECRET = re.compile(r"[A-Za-z0-9_-]{16,}")
_ADDRESS = re.compile(r"[A-Za-z0-9.:\[\]-]+:[0-9]{1,5}")
# The chunk URL /tiles/{id}/{level}/{row}/{col}, as tiling/fastpath.py matches it.
_TILE_LOCATION = (
    '"^/tiles/(?<tile_slide>[0-9a-f]{1,64})/(?<tile_level>0|[1-9][0-9]?)'
    '/(?<tile_row>0|[1-9][0-9]{0,8})/(?<tile_col>0|[1-9][0-9]{0,8})$"'
)


def local_stores(data: str) -> dict[str, Path]:
    """Slide id -> pyramid directory of every local pyramid under ``data``."""
    catalog = Catalog(open_data_root(data))
    catalog.refresh()
    stores: dict[str, Path] = {}
    for ref in catalog.slides():
        root = ref.store.local_root
        if root is not None:
            stores[ref.id] = Path(root).resolve()
    return stores


def _checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value):
        raise ViewerError(f"{what} {value!r} cannot be written into an nginx configuration")
    return value


def render_nginx_conf(
    *,
    listen: str,
    upstream: str,
    stores: Mapping[str, Path],
    secret: str,
    run_dir: Path,
    workers: int = 2,
    user: str | None = None,
) -> str:
    """The whole nginx.conf (run with ``nginx -c FILE -p RUN_DIR``).

    ``user``: who nginx's workers run as when it is started as root (default: whoever runs
    this); they must be able to read the pyramids.
    """
    user = user or pwd.getpwuid(os.getuid()).pw_name
    _checked(user, _SAFE_PATH, "user")
    _checked(listen, _ADDRESS, "listen address")
    _checked(upstream, _ADDRESS, "upstream address")
    _checked(secret, _SAFE_SECRET, "grant secret")
    run = _checked(str(run_dir.resolve()), _SAFE_PATH, "run directory")
    lines = []
    for slide_id, path in sorted(stores.items()):
        lines.append(f'        "{slide_id}" "{_checked(str(path), _SAFE_PATH, "pyramid path")}";')
    stores_map = "\n".join(lines)
    return f"""# Written by `iain nginx-conf`; regenerate after converting slides.
user {user};
worker_processes {int(workers)};
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000;
    server_tokens off;
    client_max_body_size 1g;
    client_body_temp_path {run}/client_body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    upstream iain {{
        server {upstream};
        keepalive 64;
    }}
    map $tile_slide $tile_store {{
        default "/nonexistent";
{stores_map}
    }}
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        "" "";
    }}
    server {{
        listen {listen};
        location ~ {_TILE_LOCATION} {{
            secure_link $cookie_iain_tg_s,$cookie_iain_tg_e;
            secure_link_md5 "$cookie_iain_tg_e$tile_slide$cookie_iain_session {secret}";
            if ($secure_link = "") {{ return 403; }}
            if ($secure_link = "0") {{ return 403; }}
            root /;
            default_type image/jpeg;
            types {{ }}
            add_header Cache-Control "private, max-age=31536000, immutable";
            try_files $tile_store/$tile_level/c/0/$tile_row/$tile_col @iain;
        }}
        location @iain {{
            proxy_pass http://iain;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
        location / {{
            proxy_pass http://iain;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_read_timeout 1h;
        }}
    }}
}}
"""
