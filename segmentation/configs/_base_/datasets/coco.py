# COCO-Object val2017 (5000 images, 80 thing classes + background) for GroupViT zero-shot segmentation.
# An mmengine config (pipeline, preprocessing and sliding windows from ../zero_shot.py). Override keys with
# `--opts "evaluate.seg.opts=[key=value,...]"`, e.g. data_root=/data/coco, test_cfg.mode=whole,
# test_cfg.bg_thresh=0.9, test_dataloader.num_workers=0.
_base_ = ['../zero_shot.py']
data_root = 'local_data/coco'  # the dataset below is read relative to this folder

test_dataloader = dict(
    dataset=dict(
        type='COCOObjectDataset',
        # every images/val2017/*.jpg; labels annotations/val2017/<name>_instanceTrainIds.png
        # (written by convert_dataset/convert_coco_object.py)
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017')))
test_cfg = dict(bg_thresh=0.95)
