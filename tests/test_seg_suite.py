"""The benchmark suite: the eight datasets in their prepared on-disk layouts, through main_seg.py.

Each dataset is written in the layout mmsegmentation's preparation produces (file names, label encodings, split
files) under ``<tmp>/local_data``, the folder the dataset configs read relative to the working directory. Every
number is checked against an independent confusion matrix of the written labels (after the benchmark's own label
mapping) and the predictions read back from the 'pred' visualisations.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmseg.structures import SegDataSample
from PIL import Image

import main_seg
from segmentation.datasets import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    COCO_OBJECT_CLASSES,
    COCO_STUFF_CLASSES,
    CONTEXT_CLASSES,
    VOC_CLASSES,
    GroupViTPascalVOCDataset,
)
from segmentation.evaluation import build_segmentor, load_seg_config
from segmentation.evaluation.protocols import apply_protocol
from segmentation.evaluation.suite import SUITE
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CKPT = str(REPO / "tests" / "golden" / "tiny_official_ckpt.pth")
CFG = str(REPO / "configs" / "default.yml")
DATASETS = REPO / "segmentation" / "configs" / "_base_" / "datasets"
NO_WORKERS = "evaluate.seg.opts=[test_dataloader.num_workers=0]"
# name -> (classes, the stored label value of class 0 (1 where the benchmark ignores the stored 0), bg_thresh)
EXPECTED = {
    "voc21": (VOC_CLASSES, 0, 0.95),
    "context60": (CONTEXT_CLASSES, 0, 0.35),
    "coco_object": (COCO_OBJECT_CLASSES, 0, 0.95),
    "voc20": (VOC_CLASSES[1:], 1, None),
    "context59": (CONTEXT_CLASSES[1:], 1, None),
    "coco_stuff": (COCO_STUFF_CLASSES, 0, None),
    "cityscapes": (CITYSCAPES_CLASSES, 0, None),
    "ade20k": (ADE20K_CLASSES, 1, None),
}
PHOTO = cv2.imread(str(REPO / "demo" / "examples" / "coffee.jpg"))


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    """A small BGR photo crop (the pipeline resizes it to the test resolution)."""
    y, x = np.random.default_rng(seed).integers(0, 60, size=2)
    return cv2.resize(PHOTO[y:y + 300, x:x + 400], (width, height), interpolation=cv2.INTER_AREA)


def _labels(height: int, width: int, values: np.ndarray, seed: int) -> np.ndarray:
    """Stored labels: a few rectangles of ``values`` and a 255 (ignored) band, as the converters write them."""
    rng = np.random.default_rng(seed)
    label = np.full((height, width), values[0], dtype=np.uint8)
    for value in rng.choice(values, size=4):
        y, x = rng.integers(0, height // 2), rng.integers(0, width // 2)
        label[y:y + height // 2, x:x + width // 2] = value
    label[:, :2] = 255
    return label


def _save_png(path: Path, label: np.ndarray, palette: list | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(label)
    if palette is not None:  # VOC's SegmentationClass PNGs are indexed (palette) images
        img.putpalette(palette)
    img.save(path)


def _save_jpg(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


def write_local_data(root: Path) -> dict[str, dict[str, Path]]:
    """``root/local_data`` with one or two tiny images per benchmark; returns per suite name image stem -> label."""
    data, labels = root / "local_data", {}
    voc = data / "VOCdevkit" / "VOC2012"
    voc_palette = np.asarray(GroupViTPascalVOCDataset.METAINFO["palette"], dtype=np.uint8).reshape(-1).tolist()
    for i, stem in enumerate(("2007_000033", "2007_000042")):
        _save_jpg(voc / "JPEGImages" / f"{stem}.jpg", _photo(30, 40, i))
        _save_png(voc / "SegmentationClass" / f"{stem}.png", _labels(30, 40, np.arange(0, 21), i), voc_palette)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000033\n2007_000042\n")
    labels["voc21"] = labels["voc20"] = {s: voc / "SegmentationClass" / f"{s}.png" for s in ("2007_000033",
                                                                                               "2007_000042")}

    ctx = data / "VOCdevkit" / "VOC2010"  # pascal_context.py's output: SegmentationClassContext, 0 = background
    _save_jpg(ctx / "JPEGImages" / "2008_000002.jpg", _photo(30, 40, 2))
    _save_png(ctx / "SegmentationClassContext" / "2008_000002.png", _labels(30, 40, np.arange(0, 60), 2))
    (ctx / "ImageSets" / "SegmentationContext").mkdir(parents=True)
    (ctx / "ImageSets" / "SegmentationContext" / "val.txt").write_text("2008_000002\n")
    labels["context60"] = labels["context59"] = {"2008_000002": ctx / "SegmentationClassContext" / "2008_000002.png"}

    coco = data / "coco"  # coco_stuff164k.py's *_labelTrainIds.png next to convert_coco_object.py's output
    _save_jpg(coco / "images" / "val2017" / "000000000139.jpg", _photo(40, 30, 3))
    ann = coco / "annotations" / "val2017"
    _save_png(ann / "000000000139_labelTrainIds.png", _labels(40, 30, np.arange(0, 171), 3))
    _save_png(ann / "000000000139_instanceTrainIds.png", _labels(40, 30, np.arange(0, 81), 4))
    labels["coco_stuff"] = {"000000000139": ann / "000000000139_labelTrainIds.png"}
    labels["coco_object"] = {"000000000139": ann / "000000000139_instanceTrainIds.png"}

    city = data / "cityscapes"  # cityscapes.py's *_gtFine_labelTrainIds.png beside the released files
    stem = "frankfurt_000000_000294"
    _save_jpg(city / "leftImg8bit" / "val" / "frankfurt" / f"{stem}_leftImg8bit.png", _photo(24, 48, 5))
    gt = city / "gtFine" / "val" / "frankfurt"
    _save_png(gt / f"{stem}_gtFine_labelTrainIds.png", _labels(24, 48, np.arange(0, 19), 5))
    _save_png(gt / f"{stem}_gtFine_labelIds.png", _labels(24, 48, np.arange(0, 34), 6))  # not read
    labels["cityscapes"] = {f"{stem}_leftImg8bit": gt / f"{stem}_gtFine_labelTrainIds.png"}

    ade = data / "ADEChallengeData2016"  # as released: 0 = unlabelled, 1..150
    _save_jpg(ade / "images" / "validation" / "ADE_val_00000001.jpg", _photo(36, 30, 7))
    _save_png(ade / "annotations" / "validation" / "ADE_val_00000001.png", _labels(36, 30, np.arange(0, 151), 7))
    labels["ade20k"] = {"ADE_val_00000001": ade / "annotations" / "validation" / "ADE_val_00000001.png"}
    return labels


def benchmark_labels(stored: np.ndarray, first_class_value: int) -> np.ndarray:
    """The benchmark's labels from the stored ones: with ``reduce_zero_label`` (first class stored as 1) the stored
    0 is ignored and every other value moves down by one; 255 stays ignored."""
    label = stored.astype(np.int64)
    if first_class_value == 1:
        label = np.where(label == 0, 255, np.where(label == 255, 255, label - 1))
    return label


def independent_miou(name: str, labels: dict[str, Path], pred_dir: Path) -> float:
    classes, first, _ = EXPECTED[name]
    n = len(classes)
    hist = np.zeros((n, n), dtype=np.int64)
    for stem, path in labels.items():
        gt = benchmark_labels(np.array(Image.open(path)), first)
        pred = np.array(Image.open(pred_dir / f"{stem}.png")).astype(np.int64)
        assert pred.shape == gt.shape and pred.max() < n
        valid = gt != 255
        hist += np.bincount(n * gt[valid] + pred[valid], minlength=n * n).reshape(n, n)
    inter = np.diag(hist).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = inter / (hist.sum(0) + hist.sum(1) - inter)
    return float(np.nanmean(iou) * 100)


def run_main(args: list[str], output: Path) -> dict:
    main_seg.main(["--cfg", CFG, "--resume", CKPT, "--output", str(output), *args])
    name = "suite_results.json" if "--suite" in args else "seg_results.json"
    return json.loads((output / name).read_text())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    labels = write_local_data(root)
    cwd = os.getcwd()
    os.chdir(root)  # the configs' data_root (local_data/...) is relative to the working directory
    try:
        yield root, labels
    finally:
        os.chdir(cwd)


@pytest.fixture(scope="module")
def suite_run(workdir):
    root, _ = workdir
    out = root / "out_suite"
    return out, run_main(["--suite", "all", "--vis", "pred", "--opts", NO_WORKERS], out)


@pytest.mark.slow
def test_suite_all_eight_datasets(workdir, suite_run):
    _, labels = workdir
    out, results = suite_run
    assert list(results["datasets"]) == list(SUITE) and results["missing"] == {}
    assert [len(r["IoU"]) for r in results["datasets"].values()] == [21, 60, 81, 20, 59, 171, 19, 150]
    for name, r in results["datasets"].items():
        classes, _, bg_thresh = EXPECTED[name]
        assert list(r["IoU"]) == list(classes), name
        assert (r["bg_thresh"], r["protocol"], r["num_images"]) == (bg_thresh, "groupvit", len(labels[name]))
        assert abs(r["mIoU"] - independent_miou(name, labels[name], out / "vis_imgs" / name / "pred")) < 0.01, name
    assert "background" not in results["datasets"]["voc20"]["IoU"] and "wood" in results["datasets"]["context59"]["IoU"]
    mean = np.mean([r["mIoU"] for r in results["datasets"].values()])
    assert results["mean"] == {"mIoU": round(mean, 2), "datasets": 8, "of": 8}

    md = (out / "suite_results.md").read_text()
    assert f"| **mean over the eight** | | | | | **{results['mean']['mIoU']:.2f}** |" in md
    ade = results["datasets"]["ade20k"]
    assert f"| ade20k | 150 | 1 | groupvit | none | {ade['mIoU']:.2f} |" in md
    assert "## cityscapes: per-class IoU" in md and "| traffic light |" in md


@pytest.mark.slow
def test_suite_equals_single_dataset_runs(workdir, suite_run):
    root, _ = workdir
    _, suite = suite_run
    for name in ("voc21", "ade20k"):
        single = run_main(["--opts", f"evaluate.seg.cfg={DATASETS / SUITE[name]}", NO_WORKERS], root / f"single_{name}")
        assert {k: single[k] for k in ("mIoU", "mAcc", "aAcc", "IoU", "bg_thresh")} == \
            {k: suite["datasets"][name][k] for k in ("mIoU", "mAcc", "aAcc", "IoU", "bg_thresh")}


@pytest.mark.slow
def test_bg_sweep_equals_separate_runs(workdir):
    root, _ = workdir
    voc = ["--opts", f"evaluate.seg.cfg={DATASETS / 'pascal_voc12.py'}", NO_WORKERS]
    sweep = run_main(["--bg-thresh", "0.03", "0.95", *voc], root / "sweep")
    assert [s["bg_thresh"] for s in sweep["bg_thresh_sweep"]] == [0.03, 0.95] and sweep["bg_thresh"] == 0.03
    mious = []
    for point in sweep["bg_thresh_sweep"]:
        alone = run_main(["--bg-thresh", str(point["bg_thresh"]), *voc], root / f"alone_{point['bg_thresh']}")
        assert "bg_thresh_sweep" not in alone
        assert {k: alone[k] for k in ("mIoU", "mAcc", "aAcc", "IoU")} == {k: point[k] for k in ("mIoU", "mAcc",
                                                                                                "aAcc", "IoU")}
        mious.append(point["mIoU"])
    assert len(set(mious)) > 1, "the thresholds should change the labelling of these images"


def test_sweep_labels_equal_single_threshold_labels(tiny_model, golden):
    """One forward with K thresholds gives each threshold's label map exactly as a segmentor with only it."""
    img = golden["inputs"]["img_rect"]
    meta = dict(ori_shape=(300, 400), img_shape=tuple(img.shape[-2:]))
    seg_cfg = load_seg_config(DATASETS / "pascal_voc12.py")
    classes = golden["seg"]["classes"]
    with torch.no_grad():
        sweep = build_segmentor(tiny_model, classes, seg_cfg, bg_threshs=[0.01, 0.03, 0.95])
        sample = sweep.predict(img, [SegDataSample(metainfo=dict(meta))])[0]
        labels = sample.pred_sem_seg_per_thresh.data
        assert labels.shape == (3, 300, 400) and torch.equal(labels[:1], sample.pred_sem_seg.data)
        for k, thresh in enumerate((0.01, 0.03, 0.95)):
            alone = build_segmentor(tiny_model, classes, seg_cfg, bg_threshs=[thresh])
            single = alone.predict(img, [SegDataSample(metainfo=dict(meta))])[0]
            assert torch.equal(single.pred_sem_seg.data[0], labels[k]), thresh
            if k == 0:
                assert torch.equal(single.seg_logits.data, sample.seg_logits.data)
    assert not torch.equal(labels[0], labels[2])


def test_protocols():
    voc = load_seg_config(DATASETS / "pascal_voc12.py")
    same, template = apply_protocol(voc, "groupvit", template="simple")
    assert same is voc and template == "simple"  # the reference's settings: the config untouched
    assert voc.test_pipeline[1]["scale"] == (2048, 448) and voc.test_cfg.crop_size == (448, 448)

    sclip, template = apply_protocol(voc, "sclip", template="simple")
    assert template == "full" and sclip.test_cfg.crop_size == (224, 224) and sclip.test_cfg.stride == (112, 112)
    assert sclip.test_pipeline[1]["scale"] == sclip.test_dataloader.dataset.pipeline[1]["scale"] == (2048, 336)
    assert voc.test_pipeline[1]["scale"] == (2048, 448), "the loaded config must not change"
    for name, side in (("coco_stuff", 448), ("cityscapes", 560), ("ade20k", 336)):
        cfg, _ = apply_protocol(load_seg_config(DATASETS / f"{name}.py"), "sclip")
        assert cfg.test_dataloader.dataset.pipeline[1]["scale"] == (2048, side), name

    custom, _ = apply_protocol(voc, "groupvit", short_side=512)
    assert custom.test_dataloader.dataset.pipeline[1]["scale"] == (2048, 512) and custom.test_cfg.stride == (224, 224)
    with pytest.raises(UserError, match="unknown evaluate.seg.protocol 'tcl'; valid: groupvit, sclip"):
        apply_protocol(voc, "tcl")
    with pytest.raises(UserError, match="short_side must be an integer"):
        apply_protocol(voc, "sclip", short_side=0)
    with pytest.raises(UserError, match="cannot set 'test_pipeline.1.scale' inside a list .*evaluate.seg.short_side"):
        load_seg_config(DATASETS / "pascal_voc12.py", ["test_pipeline.1.scale=[2048,336]"])


@pytest.mark.slow
def test_sclip_protocol_run(workdir):
    root, labels = workdir
    out = root / "sclip"
    results = run_main(["--suite", "voc20", "--vis", "pred", "--opts", NO_WORKERS, "evaluate.seg.protocol=sclip"], out)
    r = results["datasets"]["voc20"]
    assert results["protocol"] == r["protocol"] == "sclip"
    assert abs(r["mIoU"] - independent_miou("voc20", labels["voc20"], out / "vis_imgs" / "voc20" / "pred")) < 0.01
    assert "protocol sclip, slide mode, short side 336" in (out / "log.txt").read_text()


def test_missing_datasets_fail_before_anything_runs(tmp_path, monkeypatch):
    write_local_data(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local_data" / "ADEChallengeData2016" / "annotations" / "validation" / "ADE_val_00000001.png").unlink()
    shutil.rmtree(tmp_path / "local_data" / "cityscapes")
    evaluated = []
    monkeypatch.setattr("segmentation.evaluation.suite.evaluate_seg", lambda *a, **k: evaluated.append(a))
    with pytest.raises(UserError, match=r"2 suite dataset\(s\) missing: cityscapes, ade20k .*--skip-missing"):
        main_seg.main(["--cfg", CFG, "--resume", CKPT, "--output", str(tmp_path / "out"), "--suite",
                       "voc21,cityscapes,ade20k"])
    assert evaluated == [] and not (tmp_path / "out" / "suite_results.json").exists()
    log = (tmp_path / "out" / "log.txt").read_text()
    assert "cityscapes: segmentation dataset not found: data_root" in log


@pytest.mark.slow
def test_skip_missing_evaluates_the_others(workdir, tmp_path, monkeypatch):
    root, _ = workdir
    out = tmp_path / "out"
    (tmp_path / "local_data").mkdir()
    (tmp_path / "local_data" / "cityscapes").symlink_to(root / "local_data" / "cityscapes")
    monkeypatch.chdir(tmp_path)
    results = run_main(["--suite", "voc21,cityscapes", "--skip-missing", "--bg-thresh", "0.5", "0.9", "--opts",
                        NO_WORKERS], out)
    assert list(results["datasets"]) == ["cityscapes"] and list(results["missing"]) == ["voc21"]
    assert results["mean"] == {"mIoU": results["datasets"]["cityscapes"]["mIoU"], "datasets": 1, "of": 8}
    assert results["datasets"]["cityscapes"]["bg_thresh"] is None  # no background: no threshold, no sweep
    assert "Skipped (missing): voc21" in (out / "suite_results.md").read_text()


def test_flag_errors(workdir, tmp_path):
    root, _ = workdir
    common = ["--cfg", CFG, "--resume", CKPT, "--output", str(tmp_path / "out")]
    with pytest.raises(UserError, match="unknown --suite dataset.*voc12; valid: all or a comma list of voc21, "):
        main_seg.main([*common, "--suite", "voc21,voc12"])
    with pytest.raises(UserError, match=r"--bg-thresh values must lie in \[0, 1\]"):
        main_seg.main([*common, "--bg-thresh", "0.5", "95"])
    with pytest.raises(UserError, match="--skip-missing needs --suite"):
        main_seg.main([*common, "--skip-missing"])
    with pytest.raises(UserError, match="ade20k.py has no background class, so no background threshold applies"):
        main_seg.main([*common, "--bg-thresh", "0.5", "--opts", f"evaluate.seg.cfg={DATASETS / 'ade20k.py'}"])


@pytest.mark.slow
def test_suite_under_torchrun(workdir, suite_run):
    """Two gloo processes; one image per dataset for rank 0, a padded duplicate for rank 1 that must not count."""
    root, _ = workdir
    _, single = suite_run
    out = root / "dist"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO / "main_seg.py"), "--cfg", CFG, "--resume", CKPT, "--output", str(out),
                           "--suite", "context59,cityscapes", "--opts", NO_WORKERS],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "suite_results.json").read_text())
    for name in ("context59", "cityscapes"):
        assert results["datasets"][name]["num_images"] == 1
        assert results["datasets"][name]["IoU"] == single["datasets"][name]["IoU"], name
