"""Zero-shot segmentation evaluation: the segmentor, its builders and the mIoU loop."""

from .builder import build_image_pipeline, build_seg_dataloader, build_seg_dataset, build_segmentor, load_seg_config
from .group_vit_seg import GroupViTSegInference
from .miou import SegResults, evaluate_seg, iou_metrics, label_areas, load_eval_seg_config

__all__ = [
    "GroupViTSegInference",
    "SegResults",
    "build_image_pipeline",
    "build_seg_dataloader",
    "build_seg_dataset",
    "build_segmentor",
    "evaluate_seg",
    "iou_metrics",
    "label_areas",
    "load_eval_seg_config",
    "load_seg_config",
]
