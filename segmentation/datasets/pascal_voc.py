"""Pascal VOC 2012 (21 classes, background first) with GroupViT's prompt names."""

from mmseg.datasets import PascalVOCDataset
from mmseg.registry import DATASETS

# 'table', 'plant' and 'monitor' replace mmseg's diningtable, pottedplant and tvmonitor.
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "table",
    "dog", "horse", "motorbike", "person", "plant", "sheep", "sofa", "train", "monitor",
)


@DATASETS.register_module()
class GroupViTPascalVOCDataset(PascalVOCDataset):
    """``PascalVOCDataset`` (img .jpg, seg .png, split file) whose class names are the prompt names."""

    METAINFO = dict(classes=VOC_CLASSES, palette=PascalVOCDataset.METAINFO["palette"])
