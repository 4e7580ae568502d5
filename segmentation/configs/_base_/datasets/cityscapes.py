# Cityscapes val (500 images of 2048x1024, 19 classes, no background; pixels outside the 19 train ids are 255,
# ignored) for GroupViT zero-shot segmentation. An mmengine config (pipeline, preprocessing and sliding windows
# from ../zero_shot.py). Override keys with `--opts "evaluate.seg.opts=[key=value,...]"`.
# Images leftImg8bit/val/<city>/<name>_leftImg8bit.png; labels gtFine/val/<city>/<name>_gtFine_labelTrainIds.png,
# written by mmsegmentation's tools/dataset_converters/cityscapes.py. Class names: mmseg's CityscapesDataset names.
_base_ = ['../zero_shot.py']
data_root = 'local_data/cityscapes'  # the dataset below is read relative to this folder

test_dataloader = dict(
    dataset=dict(
        type='CityscapesDataset',
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val')))
test_cfg = dict(bg_thresh=None)  # no background class: every pixel gets one of the 19 classes
