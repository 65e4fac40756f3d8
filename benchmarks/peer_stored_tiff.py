"""Minimal peer (d): the stored JPEG bytes of a TIFF's level-0 tiles, no decode.

``python -m benchmarks.peer_stored_tiff SLIDE PORT WORKERS``; GET /{col}_{row}.jpeg.
tifffile gives the tile offsets once; each request is one os.pread (JPEGTables spliced
in when the file shares them, as Aperio files do).
"""

from __future__ import annotations

import os
import sys

import tifffile
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from benchmarks._forked import serve_forked

SLIDE = sys.argv[1]
with tifffile.TiffFile(SLIDE) as tif:
    PAGE = tif.pages[0]
    OFFSETS = list(PAGE.dataoffsets)
    COUNTS = list(PAGE.databytecounts)
    COLUMNS = -(-PAGE.imagewidth // PAGE.tilewidth)
    TABLES = PAGE.jpegtables
FD = -1


async def tile(request: Request) -> Response:
    global FD
    if FD < 0:  # opened per worker process, after the fork
        FD = os.open(SLIDE, os.O_RDONLY)
    col, row = int(request.path_params["col"]), int(request.path_params["row"])
    index = row * COLUMNS + col
    if not 0 <= col < COLUMNS or not 0 <= index < len(OFFSETS):
        return Response(status_code=404)
    data = os.pread(FD, COUNTS[index], OFFSETS[index])
    if TABLES:  # SOI + tables (without their SOI/EOI) + the tile after its SOI
        data = data[:2] + TABLES[2:-2] + data[2:]
    return Response(data, media_type="image/jpeg")


app = Starlette(routes=[Route("/{col:int}_{row:int}.jpeg", tile)])

if __name__ == "__main__":
    serve_forked(app, int(sys.argv[2]), int(sys.argv[3]))
