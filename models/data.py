"""The EBHI-Seg subset as arrays: images (N, H, W, 3) uint8, labels (N, H, W) uint8 in 0/1/2.

Each image's mask foreground (``mask > 127``) takes the image's class: non-neoplastic epithelium
for ``normal`` and ``polyp``, tumour (neoplastic epithelium) for the four neoplastic folders.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from models.errors import DatasetError
from models.evaluate import EPITHELIUM, TUMOUR

__all__ = ["CLASS_OF_FOLDER", "Dataset", "load_ebhi"]

CLASS_OF_FOLDER = {
    "normal": EPITHELIUM,
    "polyp": EPITHELIUM,
    "low_grade_in": TUMOUR,
    "high_grade_in": TUMOUR,
    "serrated_adenoma": TUMOUR,
    "adenocarcinoma": TUMOUR,
}


@dataclass(frozen=True)
class Dataset:
    """Images, labels, and per image its case id and source folder (for splits by case)."""

    images: NDArray[np.uint8]
    labels: NDArray[np.uint8]
    cases: tuple[str, ...]
    folders: tuple[str, ...]

    def subset(self, indices: NDArray[np.intp] | list[int]) -> Dataset:
        idx = np.asarray(indices, dtype=np.intp)
        return Dataset(
            self.images[idx],
            self.labels[idx],
            tuple(self.cases[i] for i in idx),
            tuple(self.folders[i] for i in idx),
        )

    def __len__(self) -> int:
        return len(self.cases)


def load_ebhi(root: Path, split: str, limit: int | None = None) -> Dataset:
    """Read the images of ``split`` ("train" or "val") listed in ``root/split.csv``."""
    listing = root / "split.csv"
    if not listing.is_file():
        raise DatasetError(f"no split.csv in {root} (is this the EBHI-Seg subset?)")
    with listing.open(newline="") as fh:
        rows = [row for row in csv.DictReader(fh) if row.get("split") == split]
    if not rows:
        raise DatasetError(f"split {split!r} is empty in {listing}")
    rows = rows[:limit] if limit else rows
    images, labels = [], []
    for row in rows:
        folder = row["class"]
        if folder not in CLASS_OF_FOLDER:
            raise DatasetError(f"unknown class folder {folder!r} in {listing}")
        try:
            image = np.asarray(Image.open(root / row["image"]).convert("RGB"))
            mask = np.asarray(Image.open(root / row["mask"]).convert("L"))
        except OSError as exc:
            raise DatasetError(f"cannot read {row['image']}: {exc}") from exc
        if image.shape[:2] != mask.shape:
            raise DatasetError(f"{row['image']}: image and mask sizes differ")
        images.append(image)
        labels.append(np.where(mask > 127, CLASS_OF_FOLDER[folder], 0).astype(np.uint8))
    return Dataset(
        np.stack(images),
        np.stack(labels),
        tuple(row["patient"] for row in rows),
        tuple(row["class"] for row in rows),
    )
