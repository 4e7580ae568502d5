# Pascal VOC 2012 val without background (VOC20: 1449 images, 20 classes; background pixels are ignored) for
# GroupViT zero-shot segmentation. The same files as pascal_voc12.py. An mmengine config (pipeline, preprocessing
# and sliding windows from ../zero_shot.py). Override keys with `--opts "evaluate.seg.opts=[key=value,...]"`.
# Class names: GroupViT's VOC names without background (segmentation/datasets/pascal_voc.py).
_base_ = ['../zero_shot.py']
data_root = 'local_data/VOCdevkit/VOC2012'  # the dataset below is read relative to this folder

test_dataloader = dict(
    dataset=dict(
        type='GroupViTPascalVOC20Dataset',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt'))
test_cfg = dict(bg_thresh=None)  # no background class: every pixel gets one of the 20 classes
