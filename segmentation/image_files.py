"""Image files for segmentation, checked by ``datasets.image_check`` and decoded with cv2 as mmcv decodes them:
``read_image`` for the demos, ``LoadCheckedImageFromFile`` for the segmentation datasets."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine import fileio

from datasets.image_check import BadImage, check_image, read_image_file


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
