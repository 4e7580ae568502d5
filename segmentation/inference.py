"""Segment a single image file (the demo path): read it, run the test pipeline and the segmentor."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmseg.structures import SegDataSample

from utils.errors import UserError

from .evaluation.builder import build_image_pipeline
from .evaluation.group_vit_seg import GroupViTSegInference


def read_image(path: str | Path) -> np.ndarray:
    """The image as uint8 BGR [H, W, 3] (cv2, as mmcv reads it); UserError if missing or not an image."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"input image not found: {path}")
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f"cannot read {path} as an image")
    return img


@torch.no_grad()
def segment_image(seg_model: GroupViTSegInference, seg_cfg: Config,
                  img: np.ndarray) -> tuple[torch.Tensor, SegDataSample]:
    """Run the test pipeline and ``seg_model`` on a BGR image.

    Returns the normalised network input [1, 3, h, w] and the sample holding ``pred_sem_seg`` [1, H, W] and
    ``seg_logits`` [C, H, W] at the image's original size.
    """
    packed = build_image_pipeline(seg_cfg)(dict(img=img))
    data = seg_model.data_preprocessor(pseudo_collate([packed]), False)
    return data["inputs"], seg_model.predict(data["inputs"], data["data_samples"])[0]
