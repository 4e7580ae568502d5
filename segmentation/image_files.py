"""Image files for segmentation, checked by ``datasets.image_check`` and decoded with cv2 as mmcv decodes them:
``read_image`` for the demos, ``LoadCheckedImageFromFile`` for the segmentation datasets; and their label maps,
checked against their image and their dataset's classes (``LoadCheckedAnnotations``); ``list_images`` for the images
a demo's ``--input`` names (a folder, searched recursively, a glob or a .txt list of paths)."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine import fileio
from mmseg.datasets.transforms import LoadAnnotations

from datasets.image_check import IMAGE_EXTENSIONS, BadImage, check_image, check_local, read_image_file
from utils.errors import UserError, one_line

LIST_SUFFIX = ".txt"  # an --input file with this suffix lists image paths, one per line
GLOB_CHARS = "*?["


class ImageInput(NamedTuple):
    """An image to segment: the file, and its name relative to the input's root (the outputs mirror it)."""

    path: Path
    name: Path


def decode_image(data: bytes, name: str | Path) -> np.ndarray:
    """Checked image bytes as uint8 BGR [H, W, 3] (cv2, as mmcv reads them)."""
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:  # what check_image accepts but cv2 cannot decode (e.g. some TIFF variants)
        raise BadImage(f"{name} is not an image that OpenCV can read")
    return img


def read_image(path: str | Path) -> np.ndarray:
    """The image as uint8 BGR [H, W, 3]; ``BadImage`` if missing, empty, not an image, truncated or too large."""
    return decode_image(read_image_file(path), path)


class LoadCheckedImageFromFile(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` (cv2, colour, uint8) with every file checked by ``datasets.image_check`` first:
    the segmentation datasets' image loading step (``build_seg_dataset`` puts it in place of ``LoadImageFromFile``)."""

    def transform(self, results: dict) -> dict:
        path = results["img_path"]
        data = fileio.get(path, backend_args=self.backend_args)
        check_image(data, path)
        img = decode_image(data, path)
        results.update(img=img.astype(np.float32) if self.to_float32 else img, img_shape=img.shape[:2],
                       ori_shape=img.shape[:2])
        return results


class LoadCheckedAnnotations(LoadAnnotations):
    """mmseg's ``LoadAnnotations`` that refuses, in one line naming the file, a label map that would end in a
    traceback or move the mIoU without a word: one that is not a single-channel map of class indices (e.g. an RGB
    rendering), one of another size than its image, or one with a value that is neither a class of the dataset
    (``num_classes``, set by ``build_seg_dataset``) nor ``ignore_index``."""

    def __init__(self, num_classes: int | None = None, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def _load_seg_map(self, results: dict) -> None:
        path = results["seg_map_path"]
        try:
            super()._load_seg_map(results)
        except Exception as e:  # decoders raise many types
            raise UserError(f"cannot read {path} as a label map: {one_line(e)}") from None
        label = results["gt_seg_map"]  # [H, W] class indices (uint8); mmseg squeezes a side of 1 away
        if label.ndim == 3:
            raise UserError(f"label map {path} has {label.shape[2]} channels: it must be one channel of class "
                            "indices (a palette or grey PNG), not a colour rendering")
        height, width = results["ori_shape"]
        if label.shape != (height, width):
            size = "x".join(map(str, label.shape[::-1]))
            raise UserError(f"label map {path} is {size} pixels, its image {width}x{height}: they must be the "
                            "same size")
        if self.num_classes is not None:
            values = np.unique(label)
            bad = values[(values >= self.num_classes) & (values != self.ignore_index)]
            if bad.size:
                raise UserError(f"label map {path} holds {', '.join(map(str, bad[:5].tolist()))}, which is not a "
                                f"class of this dataset (0-{self.num_classes - 1}, or {self.ignore_index} to ignore)")


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def glob_root(pattern: Path) -> Path:
    """The folder of a glob pattern before its first wildcard."""
    fixed = []
    for part in pattern.parts[:-1]:
        if any(c in part for c in GLOB_CHARS):
            break
        fixed.append(part)
    return Path(*fixed)


def list_images(spec: str) -> list[ImageInput] | None:
    """The images ``spec`` names, in sorted order: a folder's (recursively, files with ``IMAGE_EXTENSIONS``), a
    glob's (``**`` recursive; named relative to its folder before the first wildcard) or the paths of a .txt
    file, in its order (one per line, relative to the file's folder, where they are named from; a path outside
    it is named by its absolute path; blank lines and ``#`` comments skipped; a listed file that is missing or
    no image is reported when it is read). None when ``spec`` names one image file."""
    check_local(spec)
    path = Path(spec)
    if path.is_dir():
        return [ImageInput(p, p.relative_to(path)) for p in sorted(path.rglob("*")) if p.is_file() and is_image_name(p)]
    if not path.exists() and any(c in spec for c in GLOB_CHARS):
        root = glob_root(path)
        found = [Path(p) for p in sorted(glob.glob(spec, recursive=True))]
        return [ImageInput(p, p.relative_to(root)) for p in found if p.is_file() and is_image_name(p)]
    if path.is_file() and path.suffix.lower() == LIST_SUFFIX:
        folder = Path(os.path.abspath(path.parent))
        lines = (line.strip() for line in path.read_text().splitlines())
        listed = [Path(os.path.abspath(folder / line)) for line in lines if line and not line.startswith("#")]
        return [ImageInput(p, p.relative_to(folder) if p.is_relative_to(folder) else p.relative_to(p.anchor))
                for p in listed]
    return None
