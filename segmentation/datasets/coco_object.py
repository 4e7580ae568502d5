"""COCO-Object: COCO val2017 with the 80 thing classes plus background.

Labels are the ``*_instanceTrainIds.png`` maps written by ``convert_dataset/convert_coco_object.py``
(0 = background, 1..80 = the things in COCO order; stuff and unlabelled pixels are background).
"""

from mmseg.datasets import BaseSegDataset, COCOStuffDataset
from mmseg.registry import DATASETS

COCO_OBJECT_CLASSES = (
    "background", "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep",
    "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)


@DATASETS.register_module()
class COCOObjectDataset(BaseSegDataset):
    """Images ``<img_path>/*.jpg`` (all of them, sorted) with labels ``<seg_map_path>/<name>_instanceTrainIds.png``.

    Colours: black background, then mmseg's COCO-Stuff colours of the 80 thing classes (the reference's own
    81-colour palette is not reproduced).
    """

    METAINFO = dict(classes=COCO_OBJECT_CLASSES, palette=[[0, 0, 0], *COCOStuffDataset.METAINFO["palette"][:80]])

    def __init__(self, img_suffix: str = ".jpg", seg_map_suffix: str = "_instanceTrainIds.png", **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)
