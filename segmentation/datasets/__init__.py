"""mmseg 1.x datasets with the class names GroupViT prompts with, registered in mmseg's DATASETS.

COCO-Stuff and Cityscapes need no class of their own: their configs use mmseg's ``COCOStuffDataset`` and
``CityscapesDataset`` with mmseg's names.
"""

from mmseg.datasets import CityscapesDataset, COCOStuffDataset

from .ade20k import ADE20K_CLASSES, GroupViTADE20KDataset
from .coco_object import COCO_OBJECT_CLASSES, COCOObjectDataset
from .palette import distinct_colors
from .pascal_context import CONTEXT_CLASSES, GroupViTPascalContext59Dataset, GroupViTPascalContextDataset
from .pascal_voc import VOC_CLASSES, GroupViTPascalVOC20Dataset, GroupViTPascalVOCDataset
from .synthetic import SyntheticShapesDataset  # noqa: F401  (registers it)
from .vocab import VOCABULARY_PRESETS, parse_vocab, preset_vocabulary, resolve_vocabulary, with_vocab

COCO_STUFF_CLASSES = COCOStuffDataset.METAINFO["classes"]  # 171: the 80 things, then 91 stuff classes
CITYSCAPES_CLASSES = CityscapesDataset.METAINFO["classes"]  # 19

__all__ = [
    "ADE20K_CLASSES",
    "CITYSCAPES_CLASSES",
    "COCO_OBJECT_CLASSES",
    "COCO_STUFF_CLASSES",
    "CONTEXT_CLASSES",
    "VOCABULARY_PRESETS",
    "VOC_CLASSES",
    "COCOObjectDataset",
    "GroupViTADE20KDataset",
    "GroupViTPascalContext59Dataset",
    "GroupViTPascalContextDataset",
    "GroupViTPascalVOC20Dataset",
    "GroupViTPascalVOCDataset",
    "distinct_colors",
    "parse_vocab",
    "preset_vocabulary",
    "resolve_vocabulary",
    "with_vocab",
]
