"""Segment one image (the demos, the web app, the notebook, the quickstart's pictures): run the test pipeline
and the segmentor, and keep the label map, the classes' pixel shares and the pictures as arrays (reading and
checking an image file: ``segmentation.image_files``).

``segment_image`` returns the network input and mmseg's sample (for ``vis.visualize_sample``, which writes
files); ``segment_array`` returns an :class:`ImageSegmentation` with the pictures as RGB arrays instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from mmseg.structures import SegDataSample

from .evaluation.builder import build_image_pipeline
from .evaluation.group_vit_seg import GroupViTSegInference
from .vis import check_vis_modes, render, sample_layers, upscale


@torch.no_grad()
def segment_image(seg_model: GroupViTSegInference, img: np.ndarray,
                  name: str | Path | None = None) -> tuple[torch.Tensor, SegDataSample]:
    """Run the segmentor's test pipeline and ``seg_model`` on a BGR image (``name``: its file, for error messages).

    Returns the normalised network input [1, 3, h, w] and the sample holding ``pred_sem_seg`` [1, H, W] and
    ``seg_logits`` [C, H, W] at the image's original size.
    """
    packed = build_image_pipeline(seg_model.test_pipeline)(dict(img=img))
    if name is not None:
        packed["data_samples"].set_metainfo({"img_path": str(name)})
    data = seg_model.data_preprocessor(pseudo_collate([packed]), False)
    return data["inputs"], seg_model.predict(data["inputs"], data["data_samples"])[0]


def class_shares(label: np.ndarray, classes: Sequence[str]) -> list[tuple[str, float]]:
    """(class name, fraction of the pixels) of every class present in the label map ``label``, largest first."""
    ids, counts = np.unique(label, return_counts=True)
    found = [(classes[i], n / label.size) for i, n in zip(ids, counts, strict=True)]
    return sorted(found, key=lambda item: -item[1])


@dataclass(frozen=True)
class ImageSegmentation:
    """One image's segmentation: ``label`` [H, W] indexes ``classes``; ``pictures`` maps each requested
    visualisation mode to its RGB uint8 pictures, [H, W, 3] or enlarged (``render_pictures``; ``all_groups``: one per
    grouping stage)."""

    label: np.ndarray
    classes: tuple[str, ...]
    pictures: dict[str, list[np.ndarray]]

    def shares(self) -> list[tuple[str, float]]:
        """(class name, fraction of the pixels) of every class present, largest first."""
        return class_shares(self.label, self.classes)


@torch.no_grad()
def render_pictures(seg_model: GroupViTSegInference, inputs: torch.Tensor, sample: SegDataSample,
                    modes: Sequence[str], min_side: int = 0) -> dict[str, list[np.ndarray]]:
    """The pictures ``vis.visualize_sample`` writes, per mode, as RGB arrays at the original image size, or
    enlarged (nearest, by a whole factor) to at least ``min_side`` pixels a side, so that class names fit."""
    image, label, group_maps = sample_layers(seg_model, inputs, sample, modes)
    factor = -(-min_side // min(label.shape))  # ceil
    if factor > 1:
        image, label = upscale(image, factor), upscale(label, factor)
    palette = np.asarray(seg_model.palette, dtype=np.uint8).reshape(-1, 3)
    return {mode: [np.asarray(img.convert("RGB")) for _, img in
                   render(mode, image, label, seg_model.classes, palette, seg_model.with_bg, group_maps)]
            for mode in modes}


def segment_array(seg_model: GroupViTSegInference, img: np.ndarray, modes: Sequence[str] = (),
                  min_side: int = 0) -> ImageSegmentation:
    """Segment a uint8 BGR image [H, W, 3] (as ``image_files.read_image`` returns) and render ``modes`` (see
    :func:`render_pictures` for ``min_side``)."""
    modes = check_vis_modes(modes)
    inputs, sample = segment_image(seg_model, img)
    return ImageSegmentation(label=sample.pred_sem_seg.data[0].cpu().numpy(), classes=tuple(seg_model.classes),
                             pictures=render_pictures(seg_model, inputs, sample, modes, min_side))
