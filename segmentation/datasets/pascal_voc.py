"""Pascal VOC 2012 with GroupViT's prompt names: 21 classes (background first) and the 20-class setting."""

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


@DATASETS.register_module()
class GroupViTPascalVOC20Dataset(PascalVOCDataset):
    """VOC20: the same files without the background class. ``reduce_zero_label``: label 0 (background) becomes
    255 (ignored) and 1..20 become 0..19, as in the literature's VOC20 (MaskCLIP, TCL, SCLIP)."""

    METAINFO = dict(classes=VOC_CLASSES[1:], palette=PascalVOCDataset.METAINFO["palette"][1:])

    def __init__(self, **kwargs):
        super().__init__(reduce_zero_label=True, **kwargs)
