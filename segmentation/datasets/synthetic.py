"""The synthetic world's held-out segmentation set (``datasets/synthetic/``, ``tools/make_synthetic_data.py``).

A Pascal VOC layout whose classes are not fixed in code: they are read from the set itself, from
``dataset.json`` (classes and mask colours) or, without it, from ``classes.txt`` (one name per line, background
first; colours generated). So a world with other classes needs no code change here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS
from omegaconf import DictConfig, OmegaConf

from datasets.synthetic import DEFAULT_WORLD, WORLDS, palette
from utils.errors import UserError

from .palette import distinct_colors

SYNTHETIC_CFG = Path(__file__).resolve().parents[1] / "configs" / "_base_" / "datasets" / "synthetic.py"


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


def world_preset(stored_cfg: Mapping | DictConfig | None) -> tuple[Path, dict[str, list], list[str]] | None:
    """The synthetic world as a vocabulary preset for a checkpoint trained on it (its stored config evaluates
    segmentation with synthetic.py, as tools/quickstart.py's does), else None.

    Returns the synthetic dataset config, the world's classes and colours (from its held-out set's dataset.json
    when that folder is on this machine, else the default world's) and the stored ``test_cfg.*`` overrides (the
    background threshold chosen for the world: ``evaluate.seg.bg_thresh``, then those in ``evaluate.seg.opts``)."""
    if isinstance(stored_cfg, DictConfig):
        stored_cfg = OmegaConf.to_container(stored_cfg, resolve=False)
    seg = ((stored_cfg or {}).get("evaluate") or {}).get("seg") or {}
    if Path(str(seg.get("cfg") or "")).name != SYNTHETIC_CFG.name:
        return None
    opts = [str(opt) for opt in seg.get("opts") or []]
    data_root = next((opt.split("=", 1)[1] for opt in opts if opt.startswith("data_root=")), None)
    if data_root and (Path(data_root) / "dataset.json").is_file():
        meta = read_class_meta(data_root)
    else:
        spec = WORLDS[DEFAULT_WORLD]
        meta = {"classes": list(spec.class_names), "palette": palette(spec)}
    # the run's threshold (evaluate.seg.bg_thresh) first, so that a test_cfg override in opts wins, as in evaluation
    thresh = [] if seg.get("bg_thresh") is None else [f"test_cfg.bg_thresh={seg['bg_thresh']}"]
    return SYNTHETIC_CFG, meta, [*thresh, *(opt for opt in opts if opt.startswith("test_cfg."))]
