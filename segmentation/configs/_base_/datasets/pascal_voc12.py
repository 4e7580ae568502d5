# Pascal VOC 2012 val (1449 images, 21 classes with background) for GroupViT zero-shot segmentation.
# An mmengine config (pipeline, preprocessing and sliding windows from ../zero_shot.py). Override keys with
# `--opts "evaluate.seg.opts=[key=value,...]"`, e.g. data_root=/data/VOC2012, test_cfg.mode=whole,
# test_cfg.bg_thresh=0.9, test_dataloader.num_workers=0.
_base_ = ['../zero_shot.py']
data_root = 'local_data/VOCdevkit/VOC2012'  # the dataset below is read relative to this folder

test_dataloader = dict(
    dataset=dict(
        type='GroupViTPascalVOCDataset',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt'))
test_cfg = dict(bg_thresh=0.95)
