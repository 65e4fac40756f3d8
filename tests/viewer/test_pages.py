"""The viewer pages in ``create_app``, over HTTP without a browser: routes, static files."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.viewer._stub_backend import LiveServer
from viewer.errors import OpenSeadragonMissingError
from viewer.pages import install_pages


def test_slide_list_page_is_html_with_its_script(viewer_server: LiveServer) -> None:
    r = httpx.get(f"{viewer_server.url}/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<script src="/static/viewer/slides.js">' in r.text
    assert httpx.get(f"{viewer_server.url}/static/viewer/slides.js").status_code == 200


def test_viewer_page_embeds_the_slide_id_as_json(
    viewer_server: LiveServer, viewer_ids: dict[str, str]
) -> None:
    slide_id = viewer_ids["CMU-1-Small-Region.svs"]
    r = httpx.get(f"{viewer_server.url}/view/{slide_id}")
    assert r.status_code == 200
    assert f'"slideId": "{slide_id}"' in r.text
    assert "/static/vendor/openseadragon/openseadragon.min.js" in r.text


@pytest.mark.parametrize(
    "path",
    ["/view/..%2F..%2Fetc", "/view/%00", "/view/a%3Cscript%3E", "/view/" + "x" * 300],
)
def test_viewer_page_refuses_ids_that_cannot_be_slides(
    viewer_server: LiveServer, path: str
) -> None:
    r = httpx.get(f"{viewer_server.url}{path}")
    assert r.status_code == 404
    assert "<script>" not in r.text


def test_openseadragon_is_served_from_node_modules_with_its_licence(
    viewer_server: LiveServer,
) -> None:
    js = httpx.get(f"{viewer_server.url}/static/vendor/openseadragon/openseadragon.min.js")
    assert js.status_code == 200
    assert b"OpenSeadragon" in js.content[:2000]
    assert js.headers["content-encoding"] == "gzip"  # 348 kB as shipped
    assert js.num_bytes_downloaded < len(js.content) / 2
    licence = httpx.get(f"{viewer_server.url}/static/vendor/openseadragon/LICENSE.txt")
    assert licence.status_code == 200
    assert "Redistribution and use in source and binary forms" in licence.text
    image = httpx.get(f"{viewer_server.url}/static/vendor/openseadragon/images/home_rest.png")
    assert image.status_code == 200


def test_install_pages_without_npm_ci_says_so(tmp_path: Path) -> None:
    with pytest.raises(OpenSeadragonMissingError, match="npm ci") as info:
        install_pages(FastAPI(), openseadragon_dir=tmp_path / "openseadragon")
    assert info.value.code == "openseadragon_missing"
