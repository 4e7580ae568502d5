"""What a folder segmentation writes for programs to read, in its output folder:

- ``labels/<name>.png``: each image's label map at its original size, an indexed PNG whose pixel values are the
  class indices (coloured by the class palette); ``<name>`` mirrors the image's path relative to the input;
- ``classes.json``: index -> name (``classes``), their colours, whether index 0 is background, the background
  threshold and the protocol (test mode and windows, resize, prompt template, checkpoint);
- ``shares.csv``: one row per segmented image, the fraction of its pixels in every class (columns in class order);
- ``errors.csv``: the images that failed in the last run, each with its one-line reason.

Every file is written atomically (``utils.atomic_files``): a label map that exists is complete, so a rerun skips its
image. A folder whose ``classes.json`` describes another run (other classes, threshold or protocol) is refused, so
label maps of two vocabularies never mix.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from utils.atomic_files import write_atomic
from utils.errors import UserError

from .evaluation.group_vit_seg import GroupViTSegInference
from .vis import check_palette_png, palette_png

LABELS_DIR = "labels"
CLASSES_FILE = "classes.json"
SHARES_FILE = "shares.csv"
ERRORS_FILE = "errors.csv"


def run_description(seg_model: GroupViTSegInference, **protocol: Any) -> dict[str, Any]:
    """What ``classes.json`` holds for ``seg_model``: classes, palette, background, threshold, and the protocol
    (its test_cfg windows and test pipeline's resize, plus ``protocol``, e.g. the template and checkpoint)."""
    test_cfg = seg_model.test_cfg
    windows = {"mode": test_cfg.get("mode", "whole")}
    if windows["mode"] == "slide":
        windows.update(crop_size=list(test_cfg.crop_size), stride=list(test_cfg.stride))
    resize = [{k: v for k, v in step.items() if k != "type"} for step in seg_model.test_pipeline
              if step["type"] == "Resize"]
    description = {"classes": list(seg_model.classes), "palette": seg_model.palette,
                   "background": seg_model.with_bg, "bg_thresh": seg_model.bg_thresh if seg_model.with_bg else None,
                   "protocol": {**windows, "resize": resize[0] if resize else None, **protocol}}
    return json.loads(json.dumps(description))  # tuples as lists: as it reads back


class LabelOutputs:
    """The output folder of one run described by ``description`` (see :func:`run_description`)."""

    def __init__(self, out_dir: str | Path, description: Mapping[str, Any]):
        self.out_dir = Path(out_dir)
        self.description = dict(description)
        self.classes = list(description["classes"])
        check_palette_png(len(self.classes))
        self.palette = np.asarray(description["palette"], dtype=np.uint8).reshape(-1, 3)

    def claim(self) -> None:
        """Write ``classes.json``, or check that the one there describes this run; refuse a folder that holds
        another run's label maps."""
        path = self.out_dir / CLASSES_FILE
        if path.is_file():
            try:
                theirs = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                theirs = None
            if theirs == self.description:
                return
            keys = [k for k in self.description if not isinstance(theirs, dict) or theirs.get(k) != self.description[k]]
            raise UserError(f"{self.out_dir} holds another run's label maps ({path} differs in: {', '.join(keys)}): "
                            "choose another --output_dir, or delete that folder to start over")
        theirs = [self.out_dir / name for name in (LABELS_DIR, SHARES_FILE, ERRORS_FILE)]
        if any(p.exists() for p in theirs):
            found = next(p for p in theirs if p.exists())
            raise UserError(f"{found} exists but {path} does not: it is not this command's output; choose another "
                            "--output_dir")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        lines = (f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in self.description.items())
        write_atomic(path, "{\n" + ",\n".join(lines) + "\n}\n")  # one line per key

    def label_path(self, name: Path) -> Path:
        return self.out_dir / LABELS_DIR / name.with_suffix(".png")

    def check_names(self, names: Sequence[Path]) -> None:
        """Refuse inputs whose label maps would share a file (e.g. a.jpg and a.png in one folder)."""
        seen: dict[Path, Path] = {}
        for name in names:
            other = seen.setdefault(name.with_suffix(""), name)
            if other != name:
                raise UserError(f"{other} and {name} would share the label map {self.label_path(name)}: rename one")

    def done(self, name: Path) -> bool:
        return self.label_path(name).is_file()

    def write_label(self, name: Path, label: np.ndarray) -> None:
        """Write the label map [H, W] of the image ``name``; atomic: it exists complete or not at all."""
        path = self.label_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        palette_png(label, self.palette).save(buffer, format="PNG")
        write_atomic(path, buffer.getvalue(), durable=False)

    def read_label(self, name: Path) -> np.ndarray:
        """The label map [H, W] of ``name`` as written (class indices)."""
        return np.asarray(Image.open(self.label_path(name)))

    def class_counts(self, label: np.ndarray) -> np.ndarray:
        """Pixels per class [C] of a label map."""
        return np.bincount(label.ravel(), minlength=len(self.classes))

    def write_tables(self, names: Sequence[Path], counts: Mapping[Path, np.ndarray],
                     errors: Sequence[tuple[Path, str]]) -> None:
        """``shares.csv`` for every image of ``names`` whose label map exists (``counts`` where known, else read
        from its label map) and ``errors.csv`` for ``errors``."""
        shares = io.StringIO()
        writer = csv.writer(shares)
        writer.writerow(["image", *self.classes])
        for name in names:
            if name in counts or self.done(name):
                pixels = counts[name] if name in counts else self.class_counts(self.read_label(name))
                writer.writerow([name.as_posix(), *(f"{share:.6f}" for share in pixels / pixels.sum())])
        write_atomic(self.out_dir / SHARES_FILE, shares.getvalue())
        failed = io.StringIO()
        writer = csv.writer(failed)
        writer.writerow(["image", "error"])
        writer.writerows([name.as_posix(), reason] for name, reason in errors)
        write_atomic(self.out_dir / ERRORS_FILE, failed.getvalue())
