"""End to end: a generated VOC-layout dataset through the evaluator and main_seg.py (also under torchrun).

The mIoU must equal an independent computation (a numpy confusion matrix) from the predictions, which are read
back from the 'pred' visualisations (palette PNGs whose pixel values are the class indices).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
import torch
from omegaconf import OmegaConf
from PIL import Image

from models import build_model
from segmentation.datasets import VOC_CLASSES, GroupViTPascalVOCDataset
from segmentation.evaluation import build_seg_dataset, build_segmentor, evaluate_seg, load_seg_config
from segmentation.image_files import read_image
from segmentation.inference import segment_image
from segmentation.model_loading import load_eval_model, load_eval_state
from utils.checkpoint import save_checkpoint
from utils.config import apply_opts, cfg_to_dict, load_config
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CKPT = REPO / "tests" / "golden" / "tiny_official_ckpt.pth"
VOC_CFG = "segmentation/configs/_base_/datasets/pascal_voc12.py"
PHOTOS = {"astronaut": 0.5, "coffee": 0.5, "chelsea": 0.5}  # name -> downscale factor (the pipeline resizes anyway)


def _gt_map(height: int, width: int, seed: int) -> np.ndarray:
    """Background with a few class rectangles and a 255 (ignored) border band, as VOC labels look."""
    rng = np.random.default_rng(seed)
    label = np.zeros((height, width), dtype=np.uint8)
    for cls in rng.choice(np.arange(1, 21), size=3, replace=False):
        y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
        label[y:y + height // 2, x:x + width // 2] = cls
    label[:3], label[:, -3:] = 255, 255
    return label


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    """VOCdevkit/VOC2012 layout: JPEGImages/*.jpg, SegmentationClass/*.png (indexed), ImageSets/Segmentation/val.txt."""
    root = tmp_path_factory.mktemp("voc") / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    palette = np.asarray(GroupViTPascalVOCDataset.METAINFO["palette"], dtype=np.uint8).reshape(-1).tolist()
    for seed, (name, factor) in enumerate(PHOTOS.items()):
        rgb = getattr(skimage.data, name)()
        rgb = cv2.resize(rgb, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / "JPEGImages" / f"{name}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        gt = Image.fromarray(_gt_map(*rgb.shape[:2], seed))
        gt.putpalette(palette + [224, 224, 192] * (256 - len(palette) // 3))
        gt.save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("".join(f"{n}\n" for n in PHOTOS))
    return root


def _seg_opts(root: Path) -> str:
    return f"evaluate.seg.opts=[data_root={root},test_dataloader.num_workers=0]"


def independent_miou(root: Path, pred_dir: Path, num_classes: int = 21) -> tuple[float, np.ndarray]:
    """mIoU (x100) and per-class IoU from a confusion matrix of GT vs predicted PNGs (ignore 255)."""
    hist = np.zeros((num_classes, num_classes), dtype=np.int64)
    for name in PHOTOS:
        gt = np.array(Image.open(root / "SegmentationClass" / f"{name}.png")).astype(np.int64)
        pred = np.array(Image.open(pred_dir / f"{name}.png")).astype(np.int64)
        assert pred.shape == gt.shape
        valid = gt != 255
        hist += np.bincount(num_classes * gt[valid] + pred[valid], minlength=num_classes ** 2).reshape(num_classes, -1)
    inter = np.diag(hist).astype(np.float64)
    union = hist.sum(0) + hist.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / union
    return float(np.nanmean(iou) * 100), iou * 100


def _cfg(root: Path):
    cfg = load_config(REPO / "configs" / "default.yml")
    return apply_opts(cfg, [_seg_opts(root)])


def test_evaluate_seg_matches_independent_miou(voc_root, tiny_model, tmp_path):
    results = evaluate_seg(_cfg(voc_root), tiny_model, vis_modes=["pred"], vis_dir=tmp_path)
    assert results.classes == list(VOC_CLASSES) and results.num_images == len(PHOTOS)
    preds = [np.array(Image.open(tmp_path / "pred" / f"{name}.png")) for name in PHOTOS]
    assert all(Image.open(tmp_path / "pred" / f"{name}.png").mode == "P" for name in PHOTOS)
    assert any((p > 0).any() for p in preds), "the tiny model should predict some non-background pixels"

    miou, iou = independent_miou(voc_root, tmp_path / "pred")
    assert results.miou > 0
    assert abs(results.miou - miou) < 0.01
    np.testing.assert_allclose(np.array(results.iou, dtype=np.float64), iou, atol=0.01)  # NaN where NaN
    assert not tiny_model.training

    # the demo path (image file -> pipeline -> segmentor) predicts the same labels as the dataset path
    seg_cfg = load_seg_config(VOC_CFG, [f"data_root={voc_root}"])
    seg_model = build_segmentor(tiny_model, build_seg_dataset(seg_cfg), seg_cfg)
    _, sample = segment_image(seg_model, read_image(voc_root / "JPEGImages" / "coffee.jpg"))
    np.testing.assert_array_equal(sample.pred_sem_seg.data[0].numpy(), preds[list(PHOTOS).index("coffee")])


def test_missing_dataset_is_a_one_line_user_error(tiny_model, tmp_path):
    cfg = _cfg(tmp_path / "nowhere" / "VOC2012")
    with pytest.raises(UserError, match="data_root .*nowhere/VOC2012 does not exist") as info:
        evaluate_seg(cfg, tiny_model)
    assert "\n" not in str(info.value)

    for sub in ("JPEGImages", "SegmentationClass"):  # the split file is missing
        (tmp_path / "VOC2012" / sub).mkdir(parents=True)
    with pytest.raises(UserError, match="ImageSets/Segmentation/val.txt"):
        evaluate_seg(_cfg(tmp_path / "VOC2012"), tiny_model)


def test_seg_config_overrides():
    cfg = load_seg_config(VOC_CFG, ["data_root=/data/voc", "test_cfg.bg_thresh=0.5", "test_cfg.mode", "whole"])
    assert (cfg.data_root, cfg.test_cfg.bg_thresh, cfg.test_cfg.mode) == ("/data/voc", 0.5, "whole")
    with pytest.raises(UserError, match="unknown key 'test_cfg.bg_tresh'"):
        load_seg_config(VOC_CFG, ["test_cfg.bg_tresh=0.5"])
    with pytest.raises(UserError, match="test_cfg.mode must be one of slide, whole"):
        load_seg_config(VOC_CFG, ["test_cfg.mode=sliding"])
    with pytest.raises(UserError, match="segmentation config not found"):
        load_seg_config("segmentation/configs/_base_/datasets/coco_object164k.py")


def test_context_and_coco_object_datasets(tmp_path):
    """Context reads <split file> names; COCO-Object reads every image and its *_instanceTrainIds.png."""
    img = np.zeros((20, 30, 3), dtype=np.uint8)
    coco = tmp_path / "coco"
    (coco / "images" / "val2017").mkdir(parents=True)
    (coco / "annotations" / "val2017").mkdir(parents=True)
    for name in ("000000000139", "000000000285"):
        cv2.imwrite(str(coco / "images" / "val2017" / f"{name}.jpg"), img)
        Image.fromarray(np.full((20, 30), 7, np.uint8)).save(coco / "annotations" / "val2017" /
                                                             f"{name}_instanceTrainIds.png")
    dataset = build_seg_dataset(load_seg_config("segmentation/configs/_base_/datasets/coco.py",
                                                [f"data_root={coco}"]))
    assert len(dataset) == 2 and len(dataset.metainfo["classes"]) == 81 == len(dataset.metainfo["palette"])
    assert dataset.metainfo["classes"][:3] == ("background", "person", "bicycle")
    sample = dataset[0]["data_samples"]
    assert sample.seg_map_path.endswith("000000000139_instanceTrainIds.png")
    assert (sample.gt_sem_seg.data == 7).all() and dataset[0]["inputs"].shape[-2:] == (448, 672)

    ctx = tmp_path / "VOC2010"
    for sub in ("JPEGImages", "SegmentationClassContext", "ImageSets/SegmentationContext"):
        (ctx / sub).mkdir(parents=True)
    cv2.imwrite(str(ctx / "JPEGImages" / "2008_000002.jpg"), img)
    Image.fromarray(np.full((20, 30), 59, np.uint8)).save(ctx / "SegmentationClassContext" / "2008_000002.png")
    (ctx / "ImageSets" / "SegmentationContext" / "val.txt").write_text("2008_000002\n")
    dataset = build_seg_dataset(load_seg_config("segmentation/configs/_base_/datasets/pascal_context.py",
                                                [f"data_root={ctx}"]))
    assert len(dataset) == 1 and len(dataset.metainfo["classes"]) == 60
    assert dataset.metainfo["classes"][-1] == "wood" and (dataset[0]["data_samples"].gt_sem_seg.data == 59).all()


def _run(cmd: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_main_seg_cli(voc_root, tmp_path):
    out = tmp_path / "out"
    proc = _run([sys.executable, "main_seg.py", "--cfg", "configs/default.yml", "--resume", str(CKPT),
                 "--output", str(out), "--opts", _seg_opts(voc_root), "--vis", "pred", "input_pred"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "seg_results.json").read_text())
    miou, iou = independent_miou(voc_root, out / "vis_imgs" / "pred")
    assert abs(results["mIoU"] - miou) < 0.01
    assert list(results["IoU"]) == list(VOC_CLASSES)
    assert "| background |" in proc.stdout and f"mIoU {results['mIoU']:.2f}" in proc.stdout
    assert sorted(p.name for p in (out / "vis_imgs" / "input_pred").iterdir()) == sorted(f"{n}.png" for n in PHOTOS)
    assert (out / "log.txt").is_file() and json.loads((out / "config.json").read_text())["model"]["type"]

    bad = _run([sys.executable, "main_seg.py", "--cfg", "configs/default.yml", "--resume", str(CKPT),
                "--output", str(out), "--vis", "pred", "groups"])
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "unknown visualisation mode(s) groups; valid modes: input, pred," in bad.stderr


@pytest.mark.slow
def test_main_seg_torchrun_two_processes(voc_root, tmp_path):
    """Two gloo processes on CPU. With 3 images rank 1 gets a padded duplicate, which must not be counted."""
    out = tmp_path / "dist"
    proc = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                 "main_seg.py", "--cfg", "configs/default.yml", "--resume", str(CKPT), "--output", str(out),
                 "--opts", _seg_opts(voc_root), "--vis", "pred"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "seg_results.json").read_text())
    assert results["num_images"] == len(PHOTOS)
    miou, iou = independent_miou(voc_root, out / "vis_imgs" / "pred")  # both ranks wrote their images
    assert abs(results["mIoU"] - miou) < 0.01
    np.testing.assert_allclose(np.array([np.nan if v is None else v for v in results["IoU"].values()]), iou,
                               atol=0.01)


def test_model_config_from_checkpoint_and_tolerated_key(tiny_ckpt, tmp_path):
    """No model section in the config -> the checkpoint's; multi_label_logit_scale may be missing or unexpected."""
    cfg = load_config(REPO / "configs" / "default.yml")
    model, full = load_eval_model(cfg, str(CKPT), torch.device("cpu"))
    assert "model" not in cfg and full.model.img_encoder.embed_dim == 96 and full.model.multi_label == 3
    assert not model.training

    model_cfg = OmegaConf.to_container(tiny_ckpt["config"].model, resolve=True)
    no_multi_label = build_model({**model_cfg, "multi_label": 0})
    load_eval_state(no_multi_label, tiny_ckpt["model"])  # unexpected key tolerated
    assert torch.equal(no_multi_label.logit_scale, tiny_ckpt["model"]["logit_scale"])
    without = {k: v for k, v in tiny_ckpt["model"].items() if k != "multi_label_logit_scale"}
    load_eval_state(build_model(model_cfg), without)  # missing key tolerated
    del without["logit_scale"]
    with pytest.raises(UserError, match="1 missing"):
        load_eval_state(build_model(model_cfg), without)

    # our own checkpoints store the config as plain data
    path = tmp_path / "own.pth"
    save_checkpoint({"model": tiny_ckpt["model"], "config": cfg_to_dict(tiny_ckpt["config"])}, path)
    _, full = load_eval_model(cfg, str(path), torch.device("cpu"))
    assert full.model.text_encoder.width == 64
    save_checkpoint({"model": tiny_ckpt["model"]}, path)
    with pytest.raises(UserError, match="the checkpoint stores no config"):
        load_eval_model(cfg, str(path), torch.device("cpu"))
