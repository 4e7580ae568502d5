# The synthetic world's held-out segmentation set (tools/make_synthetic_data.py, tools/quickstart.py): 8 shape
# classes + background, classes and colours read from the set's dataset.json. An mmengine config (preprocessing
# from ../zero_shot.py). Override keys with `--opts "evaluate.seg.opts=[key=value,...]"`, e.g.
# data_root=/path/to/synthetic/seg, test_cfg.bg_thresh=0.5.
_base_ = ['../zero_shot.py']
data_root = 'local_data/synthetic/seg'  # the dataset below is read relative to this folder

# No resize: the images are generated at the training resolution (data.img_aug.img_size), and the model sees them
# whole (GroupViT interpolates its position embedding for any other size).
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    num_workers=0,  # small images: loading in the main process is cheaper than worker processes
    dataset=dict(
        type='SyntheticShapesDataset',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
        pipeline=test_pipeline))

# bg_thresh was tuned on a validation set (the seg split of another world seed), not on this held-out set.
test_cfg = dict(_delete_=True, bg_thresh=0.95, mode='whole')
