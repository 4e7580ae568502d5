# Pascal Context val (5105 images, 60 classes with background) for GroupViT zero-shot segmentation.
# An mmengine config (pipeline, preprocessing and sliding windows from ../zero_shot.py). Override keys with
# `--opts "evaluate.seg.opts=[key=value,...]"`, e.g. data_root=/data/VOC2010, test_cfg.mode=whole,
# test_cfg.bg_thresh=0.9, test_dataloader.num_workers=0.
_base_ = ['../zero_shot.py']
data_root = 'local_data/VOCdevkit/VOC2010/'  # the dataset below is read relative to this folder

test_dataloader = dict(
    dataset=dict(
        type='GroupViTPascalContextDataset',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
        ann_file='ImageSets/SegmentationContext/val.txt'))
test_cfg = dict(bg_thresh=0.35)
