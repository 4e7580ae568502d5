"""ADE20K (SceneParsing, ``ADEChallengeData2016``): 150 classes, no background."""

from mmseg.datasets import ADE20KDataset
from mmseg.registry import DATASETS

# mmseg's names, with the trailing space of its 'bed ' removed (SCLIP's list has 'bed' too).
ADE20K_CLASSES = tuple(name.strip() for name in ADE20KDataset.METAINFO["classes"])


@DATASETS.register_module()
class GroupViTADE20KDataset(ADE20KDataset):
    """``ADE20KDataset`` (img .jpg, seg .png, label 0 = unlabelled -> 255 ignored, 1..150 -> 0..149)."""

    METAINFO = dict(classes=ADE20K_CLASSES, palette=ADE20KDataset.METAINFO["palette"])
