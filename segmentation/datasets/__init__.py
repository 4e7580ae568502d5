"""mmseg 1.x datasets with the class names GroupViT prompts with (spec 7.6), registered in mmseg's DATASETS."""

from .coco_object import COCO_OBJECT_CLASSES, COCOObjectDataset
from .palette import distinct_colors
from .pascal_context import CONTEXT_CLASSES, GroupViTPascalContextDataset
from .pascal_voc import VOC_CLASSES, GroupViTPascalVOCDataset
from .synthetic import SyntheticShapesDataset  # noqa: F401  (registers it)
from .vocab import parse_vocab, with_vocab

__all__ = [
    "COCO_OBJECT_CLASSES",
    "CONTEXT_CLASSES",
    "VOC_CLASSES",
    "COCOObjectDataset",
    "GroupViTPascalContextDataset",
    "GroupViTPascalVOCDataset",
    "distinct_colors",
    "parse_vocab",
    "with_vocab",
]
