# COCO-Stuff 164k val2017 (5000 images, 171 classes: 80 things and 91 stuff, no background; unlabelled pixels are
# 255, ignored) for GroupViT zero-shot segmentation. An mmengine config (pipeline, preprocessing and sliding windows
# from ../zero_shot.py). Override keys with `--opts "evaluate.seg.opts=[key=value,...]"`.
# Labels: annotations/val2017/<name>_labelTrainIds.png, written by mmsegmentation's
# tools/dataset_converters/coco_stuff164k.py (0..170). Class names: mmseg's COCOStuffDataset names unchanged
# (SCLIP, ClearCLIP and NACLIP prompt with the same 171 names).
_base_ = ['../zero_shot.py']
data_root = 'local_data/coco'  # the same folder as COCO-Object's (coco.py); read relative to it

test_dataloader = dict(
    dataset=dict(
        type='COCOStuffDataset',
        # every images/val2017/*.jpg; labels annotations/val2017/<name>_labelTrainIds.png
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017')))
test_cfg = dict(bg_thresh=None)  # no background class: every pixel gets one of the 171 classes
