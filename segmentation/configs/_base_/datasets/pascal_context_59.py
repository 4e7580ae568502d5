# Pascal Context val without background (Context59: 5105 images, 59 classes; background pixels are ignored) for
# GroupViT zero-shot segmentation. The same files as pascal_context.py (SegmentationClassContext from
# mmsegmentation's tools/dataset_converters/pascal_context.py: 0 background, 1..59). An mmengine config (pipeline,
# preprocessing and sliding windows from ../zero_shot.py). Override keys with `--opts "evaluate.seg.opts=[...]"`.
# Class names: GroupViT's Context names without background (segmentation/datasets/pascal_context.py).
_base_ = ['../zero_shot.py']
data_root = 'local_data/VOCdevkit/VOC2010/'  # the dataset below is read relative to this folder

test_dataloader = dict(
    dataset=dict(
        type='GroupViTPascalContext59Dataset',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
        ann_file='ImageSets/SegmentationContext/val.txt'))
test_cfg = dict(bg_thresh=None)  # no background class: every pixel gets one of the 59 classes
