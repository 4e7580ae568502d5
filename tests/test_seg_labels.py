"""Label maps of a segmentation dataset are checked as they are read: a map that is not one channel of class
indices, one of another size than its image, an unreadable one, or one holding a value that is not a class of the
dataset (nor 255, ignored) stops the evaluation with one line naming the file, instead of a traceback or an mIoU that
silently leaves pixels out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segmentation.evaluation.builder import build_seg_dataset, load_seg_config
from utils.errors import UserError

VOC_CFG = "segmentation/configs/_base_/datasets/pascal_voc12.py"
CONTEXT59_CFG = "segmentation/configs/_base_/datasets/pascal_context_59.py"
HEIGHT, WIDTH = 24, 32


def voc_like(root: Path, label: Image.Image | bytes, labels: str = "SegmentationClass",
             split: str = "ImageSets/Segmentation/val.txt") -> Path:
    """One 32x24 image with the given label file, in the VOC layout."""
    for sub in ("JPEGImages", labels, Path(split).parent):
        (root / sub).mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (WIDTH, HEIGHT), (90, 120, 30)).save(root / "JPEGImages" / "a.jpg")
    if isinstance(label, bytes):
        (root / labels / "a.png").write_bytes(label)
    else:
        label.save(root / labels / "a.png")
    (root / split).write_text("a\n")
    return root


def first_sample(root: Path, cfg: str = VOC_CFG) -> dict:
    return build_seg_dataset(load_seg_config(cfg, [f"data_root={root}"]))[0]


def indexed(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values.astype(np.uint8), mode="L")


def test_a_good_label_map_is_read_as_it_is(tmp_path):
    values = np.zeros((HEIGHT, WIDTH))
    values[:, :5], values[0] = 20, 255  # the last class, and the ignored value
    sample = first_sample(voc_like(tmp_path, indexed(values)))
    np.testing.assert_array_equal(sample["data_samples"].gt_sem_seg.data[0].numpy(), values)


@pytest.mark.parametrize("label, message", [
    (Image.new("RGB", (WIDTH, HEIGHT), (128, 0, 0)), r"has 3 channels: it must be one channel of class indices"),
    (indexed(np.zeros((HEIGHT + 8, WIDTH))), r"is 32x32 pixels, its image 32x24: they must be the same size"),
    (indexed(np.zeros((HEIGHT // 2, WIDTH // 2))), r"is 16x12 pixels, its image 32x24"),
    (indexed(np.full((HEIGHT, WIDTH), 21)), r"holds 21, which is not a class of this dataset \(0-20, or 255 to ignore"),
    (b"\x89PNG\r\n\x1a\n half a file", r"cannot read .*a\.png as a label map"),
], ids=["rgb", "larger", "smaller", "one-above-the-classes", "truncated"])
def test_a_bad_label_map_is_named_in_one_line(tmp_path, label, message):
    with pytest.raises(UserError, match=message) as error:
        first_sample(voc_like(tmp_path, label))
    assert str(tmp_path / "SegmentationClass" / "a.png") in str(error.value) and "\n" not in str(error.value)


def test_values_are_checked_after_the_datasets_own_label_shift(tmp_path):
    """Context59 drops label 0 (reduce_zero_label): file value 60 is class 59, one past the 59 classes."""
    root = voc_like(tmp_path, indexed(np.full((HEIGHT, WIDTH), 60)), labels="SegmentationClassContext",
                    split="ImageSets/SegmentationContext/val.txt")
    with pytest.raises(UserError, match=r"holds 59, which is not a class of this dataset \(0-58, or 255"):
        first_sample(root, CONTEXT59_CFG)
