"""Segment a single image (the demo path): run the test pipeline and the segmentor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmseg.structures import SegDataSample

from .evaluation.builder import build_image_pipeline
from .evaluation.group_vit_seg import GroupViTSegInference


@torch.no_grad()
def segment_image(seg_model: GroupViTSegInference, seg_cfg: Config, img: np.ndarray,
                  name: str | Path | None = None) -> tuple[torch.Tensor, SegDataSample]:
    """Run the test pipeline and ``seg_model`` on a BGR image (``name``: its file, for error messages).

    Returns the normalised network input [1, 3, h, w] and the sample holding ``pred_sem_seg`` [1, H, W] and
    ``seg_logits`` [C, H, W] at the image's original size.
    """
    packed = build_image_pipeline(seg_cfg)(dict(img=img))
    if name is not None:
        packed["data_samples"].set_metainfo({"img_path": str(name)})
    data = seg_model.data_preprocessor(pseudo_collate([packed]), False)
    return data["inputs"], seg_model.predict(data["inputs"], data["data_samples"])[0]
