# What every zero-shot segmentation dataset config shares (datasets/*.py inherit it with `_base_` and set data_root,
# the dataset and bg_thresh). An mmengine config.

# Short side to 448 (long side at most 2048), cv2 bilinear; labels stay at the original size.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 448), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    num_workers=2,  # one image per batch; workers per process
    dataset=dict(pipeline=test_pipeline))

# BGR -> RGB, then ImageNet mean/std (x255).
data_preprocessor = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)

# Segmentor: background where no class scores at least min(bg_thresh, best group score);
# sliding 448x448 windows with stride 224 (mode='whole' runs on the whole resized image).
test_cfg = dict(bg_thresh=0.95, mode='slide', stride=(224, 224), crop_size=(448, 448))
