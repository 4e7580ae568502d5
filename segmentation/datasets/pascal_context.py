"""Pascal Context with GroupViT's prompt names: the 60-class setting (background first) and the 59-class one."""

from mmseg.datasets import PascalContextDataset, PascalContextDataset59
from mmseg.registry import DATASETS

# 'airplane', 'plant' and 'monitor' replace mmseg's aeroplane, pottedplant and tvmonitor.
CONTEXT_CLASSES = (
    "background", "airplane", "bag", "bed", "bedclothes", "bench", "bicycle", "bird", "boat", "book", "bottle",
    "building", "bus", "cabinet", "car", "cat", "ceiling", "chair", "cloth", "computer", "cow", "cup", "curtain",
    "dog", "door", "fence", "floor", "flower", "food", "grass", "ground", "horse", "keyboard", "light", "motorbike",
    "mountain", "mouse", "person", "plate", "platform", "plant", "road", "rock", "sheep", "shelves", "sidewalk",
    "sign", "sky", "snow", "sofa", "table", "track", "train", "tree", "truck", "monitor", "wall", "water", "window",
    "wood",
)


@DATASETS.register_module()
class GroupViTPascalContextDataset(PascalContextDataset):
    """``PascalContextDataset`` (img .jpg, seg .png, split file) whose class names are the prompt names."""

    METAINFO = dict(classes=CONTEXT_CLASSES, palette=PascalContextDataset.METAINFO["palette"])


@DATASETS.register_module()
class GroupViTPascalContext59Dataset(PascalContextDataset59):
    """``PascalContextDataset59``: the same files, label 0 (background) ignored and 1..59 read as 0..58
    (``reduce_zero_label``), with GroupViT's prompt names."""

    METAINFO = dict(classes=CONTEXT_CLASSES[1:], palette=PascalContextDataset59.METAINFO["palette"])
