"""The root document written after the build measured its levels is the one the pyramid's
other documents were written beside (same bytes for the same inputs)."""

from __future__ import annotations

import json

import numpy as np

from tiling._metadata import ROOT_KEY, pyramid_documents, root_document
from tiling.layout import PyramidSpec


def test_root_document_equals_the_full_set_root() -> None:
    spec = PyramidSpec(5000, 3000, 256, 256, 0.25, 0.25)
    info = {"vendor": "aperio", "reduced_levels": {"levels": [{"level": 1, "psnr_db": 36.2}]}}
    full = pyramid_documents(
        spec, name="s", quality=90, subsampling="444", info=info, icc_profile=b"icc",
        associated={"label": np.zeros((4, 4, 3), np.uint8)},
    )  # fmt: skip
    alone = root_document(spec, name="s", info=info, icc_profile=b"icc")
    assert alone == full[ROOT_KEY]
    attrs = json.loads(alone)["attributes"]
    assert attrs["iain"]["reduced_levels"]["levels"][0]["psnr_db"] == 36.2
    assert len(attrs["ome"]["multiscales"][0]["datasets"]) == spec.level_count
    assert len(full) > spec.level_count + 1  # the full set also has the arrays' documents
