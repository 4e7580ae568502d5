"""The synthetic world's held-out segmentation set (``datasets/synthetic/``, ``tools/make_synthetic_data.py``).

A Pascal VOC layout whose classes are not fixed in code: they are read from the set itself, from
``dataset.json`` (classes and mask colours) or, without it, from ``classes.txt`` (one name per line, background
first; colours generated). So a world with other classes needs no code change here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from utils.errors import UserError

from .palette import distinct_colors


def read_class_meta(data_root: str | Path) -> dict[str, list]:
    """``{'classes', 'palette'}`` of a synthetic segmentation set, from its ``dataset.json`` or ``classes.txt``."""
    root = Path(data_root)
    meta_file, names_file = root / "dataset.json", root / "classes.txt"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        classes, palette = list(meta["classes"]), meta.get("palette")
    elif names_file.is_file():
        classes, palette = [line.strip() for line in names_file.read_text().splitlines() if line.strip()], None
    else:
        raise UserError(f"synthetic segmentation set {root}: neither dataset.json nor classes.txt exists "
                        "(generate it with tools/make_synthetic_data.py)")
    if palette is None or len(palette) != len(classes):
        palette = [[0, 0, 0], *distinct_colors(len(classes) - 1).tolist()]
    return {"classes": classes, "palette": [list(map(int, color)) for color in palette]}


@DATASETS.register_module()
class SyntheticShapesDataset(BaseSegDataset):
    """Images ``JPEGImages/*.jpg`` with palette masks ``SegmentationClass/*.png`` (pixel = class index,
    0 = background), listed in the split file; classes from the set's own ``dataset.json`` / ``classes.txt``."""

    def __init__(self, data_root: str, metainfo: dict[str, Any] | None = None, **kwargs):
        super().__init__(data_root=data_root, metainfo=metainfo or read_class_meta(data_root), img_suffix=".jpg",
                         seg_map_suffix=".png", reduce_zero_label=False, **kwargs)
