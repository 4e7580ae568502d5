# Pascal Context val (5105 images, 60 classes with background) for GroupViT zero-shot segmentation.
# An mmengine config. Override keys with `--opts "evaluate.seg.opts=[key=value,...]"`, e.g.
# data_root=/data/VOC2010, test_cfg.mode=whole, test_cfg.bg_thresh=0.9, test_dataloader.num_workers=0.
data_root = 'local_data/VOCdevkit/VOC2010/'  # the dataset below is read relative to this folder

# Short side to 448 (long side at most 2048), cv2 bilinear; labels stay at the original size.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 448), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    num_workers=2,  # one image per batch; workers per process
    dataset=dict(
        type='GroupViTPascalContextDataset',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
        ann_file='ImageSets/SegmentationContext/val.txt',
        pipeline=test_pipeline))

# BGR -> RGB, then ImageNet mean/std (x255).
data_preprocessor = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)

# Segmentor: background where no class scores at least min(bg_thresh, best group score);
# sliding 448x448 windows with stride 224 (mode='whole' runs on the whole resized image).
test_cfg = dict(bg_thresh=0.35, mode='slide', stride=(224, 224), crop_size=(448, 448))
