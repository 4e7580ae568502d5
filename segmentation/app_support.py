"""Segment one in-memory image and keep its pictures as arrays (the web demo and the notebook).

``segment_image`` and ``vis.render`` do the work; this module only returns what ``vis.visualize_sample`` would
write to files as RGB arrays, with the label map, the class names and the classes' pixel shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from mmengine.config import Config
from mmseg.structures import SegDataSample

from .evaluation.group_vit_seg import GroupViTSegInference
from .inference import segment_image
from .vis import check_vis_modes, render, sample_layers


@dataclass(frozen=True)
class ImageSegmentation:
    """One image's segmentation: ``label`` [H, W] indexes ``classes``; ``pictures`` maps each requested
    visualisation mode to its RGB uint8 [H, W, 3] pictures (``all_groups``: one per grouping stage)."""

    label: np.ndarray
    classes: tuple[str, ...]
    pictures: dict[str, list[np.ndarray]]

    def shares(self) -> list[tuple[str, float]]:
        """(class name, fraction of the pixels) of every class present, largest first."""
        ids, counts = np.unique(self.label, return_counts=True)
        found = [(self.classes[i], n / self.label.size) for i, n in zip(ids, counts, strict=True)]
        return sorted(found, key=lambda item: -item[1])


@torch.no_grad()
def render_pictures(seg_model: GroupViTSegInference, inputs: torch.Tensor, sample: SegDataSample,
                    modes: Sequence[str]) -> dict[str, list[np.ndarray]]:
    """The pictures ``vis.visualize_sample`` writes, per mode, as RGB arrays at the original image size."""
    image, label, group_maps = sample_layers(seg_model, inputs, sample, modes)
    palette = np.asarray(seg_model.palette, dtype=np.uint8).reshape(-1, 3)
    return {mode: [np.asarray(img.convert("RGB")) for _, img in
                   render(mode, image, label, seg_model.classes, palette, seg_model.with_bg, group_maps)]
            for mode in modes}


def segment_array(seg_model: GroupViTSegInference, seg_cfg: Config, img: np.ndarray,
                  modes: Sequence[str] = ()) -> ImageSegmentation:
    """Segment a uint8 BGR image [H, W, 3] (as ``inference.read_image`` returns) and render ``modes``."""
    modes = check_vis_modes(modes)
    inputs, sample = segment_image(seg_model, seg_cfg, img)
    return ImageSegmentation(label=sample.pred_sem_seg.data[0].cpu().numpy(), classes=tuple(seg_model.classes),
                             pictures=render_pictures(seg_model, inputs, sample, modes))
