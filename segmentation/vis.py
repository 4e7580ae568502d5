"""Visualisations of a segmentation (the modes of the reference's ``GroupViTSegInference.show_result``), written
as PNG files ``<out_dir>/<mode>/<name>[suffix].png``.

Modes:
- ``input``: the network input, de-normalised and resized back to the original size;
- ``pred``: the label map as an indexed (palette) PNG whose pixel values are the class indices;
- ``input_pred``: the class colours blended over the input at opacity 0.5 (background pixels left as they are);
- ``input_pred_label``: the same with the name of every predicted class (except background) drawn at the mean
  position of its pixels;
- ``all_groups``: per grouping stage, each pixel's group (argmax of the chained soft assignment on the whole
  resized image) in group colours blended over the input, files ``<name>_layer<k>.png``;
- ``first_group`` / ``final_group``: the first / last stage only.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mmseg.structures import SegDataSample
from PIL import Image

from utils.atomic_files import atomic_output
from utils.errors import UserError

from .datasets.palette import distinct_colors

if TYPE_CHECKING:
    from .evaluation.group_vit_seg import GroupViTSegInference

VIS_MODES = ("input", "pred", "input_pred", "input_pred_label", "all_groups", "first_group", "final_group")
GROUP_MODES = ("all_groups", "first_group", "final_group")
OPACITY = 0.5
_DPI = 100


def check_vis_modes(modes: Sequence[str]) -> list[str]:
    """The modes, or a UserError naming the unknown ones and listing the valid ones."""
    unknown = [m for m in modes if m not in VIS_MODES]
    if unknown:
        raise UserError(f"unknown visualisation mode(s) {', '.join(unknown)}; valid modes: {', '.join(VIS_MODES)}")
    return list(modes)


def check_palette_png(num_classes: int) -> None:
    """An indexed PNG holds at most 256 classes."""
    if num_classes > 256:
        raise UserError(f"the 'pred' visualisation holds at most 256 classes, got {num_classes}")


def denormalize(inputs: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, ori_shape: Sequence[int]) -> np.ndarray:
    """Normalised RGB input [3, h, w] -> uint8 RGB image [H, W, 3] at the original size (cv2 bilinear)."""
    img = (inputs * std.view(3, 1, 1) + mean.view(3, 1, 1)).clamp(0, 255).round()
    img = img.permute(1, 2, 0).cpu().numpy().astype(np.uint8)
    height, width = ori_shape[:2]
    if img.shape[:2] == (height, width):
        return img
    return cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)


def blend(image: np.ndarray, colors: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """``image`` with ``colors`` [H, W, 3] blended at OPACITY, where ``mask`` is true (everywhere if None)."""
    mixed = (image.astype(np.float32) * (1 - OPACITY) + colors.astype(np.float32) * OPACITY).astype(np.uint8)
    return mixed if mask is None else np.where(mask[..., None], mixed, image)


def draw_class_names(image: np.ndarray, label: np.ndarray, classes: Sequence[str], with_bg: bool) -> np.ndarray:
    """Each predicted class's name (background excepted) at the mean (row, col) of its pixels, via matplotlib."""
    height, width = image.shape[:2]
    fig = Figure(figsize=(width / _DPI, height / _DPI), dpi=_DPI)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image)
    ax.set_axis_off()
    for idx in np.unique(label):
        if with_bg and idx == 0:
            continue
        rows, cols = np.nonzero(label == idx)
        ax.text(cols.mean(), rows.mean(), classes[idx], color="orangered", fontsize=16, ha="center", va="center",
                bbox=dict(facecolor="black", alpha=0.5, pad=0.7, edgecolor="none"))
    canvas.draw()
    drawn = np.asarray(canvas.buffer_rgba())[..., :3]
    if drawn.shape[:2] != (height, width):  # the canvas can be a pixel off for some sizes
        drawn = cv2.resize(drawn, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(drawn)


def upscale(array: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of an [H, W] or [H, W, 3] array by an integer ``factor``."""
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def palette_png(label: np.ndarray, palette: np.ndarray) -> Image.Image:
    """The label map [H, W] as an indexed image whose pixel values are the class indices, coloured by ``palette``
    uint8 [C, 3] (at most 256 classes: ``check_palette_png``)."""
    pred = Image.fromarray(label.astype(np.uint8))
    pred.putpalette(palette.reshape(-1).tolist())  # 'L' -> 'P': the pixel values stay the class indices
    return pred


def group_labels(attn_map: torch.Tensor, ori_shape: Sequence[int]) -> np.ndarray:
    """Soft group map [h, w, G] -> each original pixel's group [H, W] (bilinear resize, then argmax)."""
    grid = attn_map.permute(2, 0, 1)[None].float()  # [1, G, h, w]
    grid = F.interpolate(grid, size=tuple(ori_shape[:2]), mode="bilinear", align_corners=False)
    return grid[0].argmax(dim=0).cpu().numpy()


def render(mode: str, image: np.ndarray, label: np.ndarray, classes: Sequence[str], palette: np.ndarray,
           with_bg: bool, group_maps: Sequence[torch.Tensor] = ()) -> list[tuple[str, Image.Image]]:
    """(file-name suffix, image) pairs of one mode. ``image`` RGB [H, W, 3], ``label`` [H, W] class indices,
    ``palette`` uint8 [C, 3], ``group_maps`` the per-stage soft group maps [h, w, G_k] (group modes only)."""
    if mode == "input":
        return [("", Image.fromarray(image))]
    if mode == "pred":
        return [("", palette_png(label, palette))]
    if mode in ("input_pred", "input_pred_label"):
        blended = blend(image, palette[label], label != 0 if with_bg else None)
        if mode == "input_pred_label":
            blended = draw_class_names(blended, label, classes, with_bg)
        return [("", Image.fromarray(blended))]
    offsets = np.cumsum([0, *(m.shape[-1] for m in group_maps)])  # stage k uses colours offsets[k]...
    stages = {"all_groups": range(len(group_maps)), "first_group": [0], "final_group": [len(group_maps) - 1]}[mode]
    out = []
    for k in stages:
        colors = distinct_colors(group_maps[k].shape[-1], offset=int(offsets[k]))
        groups = group_labels(group_maps[k], image.shape[:2])
        out.append((f"_layer{k}" if mode == "all_groups" else "", Image.fromarray(blend(image, colors[groups]))))
    return out


def save_vis(out_dir: str | Path, name: str, modes: Sequence[str], image: np.ndarray, label: np.ndarray,
             classes: Sequence[str], palette: Sequence[Sequence[int]], with_bg: bool,
             group_maps: Sequence[torch.Tensor] = ()) -> list[Path]:
    """Write every mode's files; returns their paths."""
    palette_arr = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    written = []
    for mode in modes:
        for suffix, img in render(mode, image, label, classes, palette_arr, with_bg, group_maps):
            path = Path(out_dir) / mode / f"{name}{suffix}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(path, durable=False) as tmp:  # a stop never leaves a truncated picture
                img.save(tmp, format="PNG")
            written.append(path)
    return written


def existing_vis(out_dir: str | Path, name: str, modes: Sequence[str]) -> list[Path]:
    """The files :func:`save_vis` would write for ``name`` that exist already (all_groups: one per stage)."""
    found = []
    for mode in modes:
        folder = Path(out_dir) / mode
        found += [folder / f"{name}.png"] if (folder / f"{name}.png").exists() else []
        found += sorted(folder.glob(f"{glob.escape(name)}_layer*.png")) if mode == "all_groups" else []
    return found


@torch.no_grad()
def sample_layers(seg_model: GroupViTSegInference, inputs: torch.Tensor, sample: SegDataSample, modes: Sequence[str]
                  ) -> tuple[np.ndarray, np.ndarray, list[torch.Tensor]]:
    """What the pictures of one predicted sample are drawn from: the image (RGB uint8, original size), the label map
    and, when a group mode is asked for, each stage's group map [h, w, G_k]. ``inputs`` [1, 3, h, w] is the
    normalised network input."""
    height, width = sample.metainfo["img_shape"][:2]
    inputs = inputs[..., :height, :width]
    prep = seg_model.data_preprocessor
    image = denormalize(inputs[0], prep.mean, prep.std, sample.metainfo["ori_shape"])
    label = sample.pred_sem_seg.data[0].cpu().numpy()
    group_maps = []
    if any(mode in GROUP_MODES for mode in modes):
        group_maps = [m[0] for m in seg_model.get_attn_maps(inputs)]  # whole resized image, [h, w, G_k]
    return image, label, group_maps


def visualize_sample(seg_model: GroupViTSegInference, inputs: torch.Tensor, sample: SegDataSample,
                     modes: Sequence[str], out_dir: str | Path, name: str) -> list[Path]:
    """Visualise one predicted sample into ``out_dir/<mode>/<name>*.png``; returns the paths."""
    image, label, group_maps = sample_layers(seg_model, inputs, sample, modes)
    return save_vis(out_dir, name, modes, image, label, seg_model.classes, seg_model.palette, seg_model.with_bg,
                    group_maps)
