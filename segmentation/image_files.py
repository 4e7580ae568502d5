"""Image files for segmentation, checked by ``datasets.image_check`` and decoded with cv2 as mmcv decodes them:
``read_image`` for the demos, ``LoadCheckedImageFromFile`` for the segmentation datasets; and their label maps,
checked against their image and their dataset's classes (``LoadCheckedAnnotations``)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine import fileio
from mmseg.datasets.transforms import LoadAnnotations

from datasets.image_check import BadImage, check_image, read_image_file
from utils.errors import UserError


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
            raise UserError(f"cannot read {path} as a label map: {' '.join(str(e).split())}") from None
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
