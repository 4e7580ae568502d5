# ADE20K val (ADEChallengeData2016: 2000 images, 150 classes, no background; label 0 = unlabelled is ignored) for
# GroupViT zero-shot segmentation. An mmengine config (pipeline, preprocessing and sliding windows from
# ../zero_shot.py). Override keys with `--opts "evaluate.seg.opts=[key=value,...]"`.
# Images images/validation/*.jpg, labels annotations/validation/*.png (1..150, as released; no conversion).
# Class names: mmseg's ADE20KDataset names (segmentation/datasets/ade20k.py).
_base_ = ['../zero_shot.py']
data_root = 'local_data/ADEChallengeData2016'  # the dataset below is read relative to this folder

test_dataloader = dict(
    dataset=dict(
        type='GroupViTADE20KDataset',
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation')))
test_cfg = dict(bg_thresh=None)  # no background class: every pixel gets one of the 150 classes
