"""The reference's zero-shot segmentation for a transformers ``GroupViTModel`` (which has no such algorithm).

    from transformers import GroupViTModel
    from segmentation.transformers_model import segment_with_transformers

    model = GroupViTModel.from_pretrained("nvidia/groupvit-gcc-yfcc")
    result = segment_with_transformers(model, "photo.jpg", vocabulary=["cup", "saucer", "spoon"])
    result.label, result.classes, result.shares()

The weights are converted in memory (``models.hf_convert.from_transformers``) and segmented exactly as
``demo/demo_seg.py`` does: the dataset config's test pipeline, the whole image at once, background by threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from models.hf_convert import from_transformers
from utils.errors import UserError

from .datasets import VOCABULARY_PRESETS, with_vocab
from .evaluation import build_segmentor
from .image_files import read_image
from .inference import ImageSegmentation, segment_array

if TYPE_CHECKING:
    from transformers import GroupViTModel


def _bgr(image: Image.Image | np.ndarray | str | Path) -> np.ndarray:
    """uint8 BGR [H, W, 3] from a PIL image, an RGB uint8 array or an image file."""
    if isinstance(image, str | Path):
        return read_image(image)
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        raise UserError("the image must be a PIL image, an RGB uint8 array [H, W, 3] or an image file")
    return np.ascontiguousarray(image[..., ::-1])


def segment_with_transformers(hf_model: GroupViTModel, image: Image.Image | np.ndarray | str | Path,
                              vocabulary: Sequence[str] | None = None, dataset: str = "voc",
                              modes: Sequence[str] = ()) -> ImageSegmentation:
    """Segment ``image`` with ``hf_model``: the classes of ``dataset`` (voc, context or coco), or background plus
    ``vocabulary`` when given; ``modes`` are the pictures to render (e.g. 'input_pred_label', 'final_group')."""
    if dataset not in VOCABULARY_PRESETS:
        raise UserError(f"unknown dataset {dataset!r}; choose one of {', '.join(VOCABULARY_PRESETS)}")
    dataset_cfg, meta = VOCABULARY_PRESETS[dataset]
    meta = with_vocab(meta, vocabulary, vocab_only=True) if vocabulary else meta
    seg_model = build_segmentor(from_transformers(hf_model), meta, dataset_cfg, opts=["test_cfg.mode=whole"])
    return segment_array(seg_model, _bgr(image), modes)
