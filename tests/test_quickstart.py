"""The main command, shortened: a tiny world, one epoch of a few iterations, every artefact and every number.

The reported numbers must equal numbers recomputed here from what the run wrote: the mIoUs from the label-map
PNGs and the ground-truth masks (a numpy confusion matrix), the chance mIoU from the masks, top-1/top-5 from the
per-image predictions (whose targets must be the labels stored in the classification shards, and whose accuracy
the project's own evaluate_cls must reproduce), and the curves from the TensorBoard events.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import quickstart  # noqa: E402

NUM_CLASSES = 9  # background + 8 shapes
ARGS = ["--train-samples", "48", "--seg-images", "5", "--cls-images", "12", "--epochs", "1", "--batch-size", "16",
        "--pictures", "2", "--workers", "1", "--threads", "2"]
OPTS = ["--opts", "print_freq=1", "data.num_workers=0", "data.shuffle_buffer=16"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[dict, Path, Path, str]:
    """One shortened run of the pipeline: (results, output folder, data folder, printed text)."""
    tmp = tmp_path_factory.mktemp("quickstart")
    out, data = tmp / "out", tmp / "data"
    from io import StringIO
    from unittest import mock

    printed = StringIO()
    with mock.patch("sys.stdout", printed):
        results = quickstart.main([*ARGS, "--output", str(out), "--data-dir", str(data), *OPTS])
    return results, out, data, printed.getvalue()


def confusion(gt_dir: Path, pred_dir: Path, names: list[str]) -> np.ndarray:
    hist = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    for name in names:
        gt = np.asarray(Image.open(gt_dir / f"{name}.png")).astype(np.int64)
        pred = np.asarray(Image.open(pred_dir / f"{name}.png")).astype(np.int64)
        assert pred.shape == gt.shape
        hist += np.bincount(NUM_CLASSES * gt.ravel() + pred.ravel(), minlength=NUM_CLASSES ** 2).reshape(
            NUM_CLASSES, NUM_CLASSES)
    return hist


def miou(hist: np.ndarray) -> tuple[float, list[float | None]]:
    """mmseg's mIoU (x100, rounded to 2 decimals): NaN-mean over classes, NaN = in neither GT nor prediction."""
    inter = np.diag(hist).astype(np.float64)
    with np.errstate(invalid="ignore"):
        iou = inter / (hist.sum(0) + hist.sum(1) - inter)
    return round(float(np.nanmean(iou)) * 100, 2), [None if np.isnan(v) else round(v * 100, 2) for v in iou]


def seg_names(data: Path) -> list[str]:
    return (data / "seg" / "ImageSets" / "Segmentation" / "val.txt").read_text().split()


@pytest.mark.slow
def test_every_artefact_exists(run):
    results, out, data, printed = run
    paths = results["paths"]
    for key in ("config", "checkpoint", "train_log", "results", "cls_predictions", "curves", "curves_data"):
        assert Path(paths[key]).is_file() and Path(paths[key]).stat().st_size > 0, key
    assert list(Path(paths["tensorboard"]).glob("events.out.tfevents.*"))
    assert Path(paths["results"]) == out / "quickstart_results.json"
    assert json.loads(Path(paths["results"]).read_text()) == json.loads(json.dumps(results))
    names = seg_names(data)
    for key in ("predictions", "predictions_untrained"):
        assert sorted(p.stem for p in Path(paths[key]).glob("*.png")) == sorted(names)
    expected = {out / "pictures" / mode / f"{name}.png" for mode in quickstart.PICTURE_MODES for name in names[:2]}
    assert set(map(Path, paths["pictures"])) == expected | {out / "pictures" / "overview.png"}
    for picture in [*expected, out / "pictures" / "overview.png", Path(paths["curves"])]:
        with Image.open(picture) as img:
            assert img.format == "PNG" and min(img.size) >= quickstart.PICTURE_SIDE // 2
    # what the summary points to
    for key in ("curves", "checkpoint", "results", "predictions"):
        assert paths[key] in printed
    assert "mIoU trained" in printed and "mIoU untrained" in printed and "mIoU chance" in printed
    assert "patch-grid bound" in printed and "label_agreement" in printed
    for report in (results["grouping"], results["grouping_untrained"]):  # segmentation/evaluation/diagnostics.py
        assert 1 <= report["groups"] <= 16 and 0 <= report["label_agreement"] <= 100
        assert 0 <= report["oracle_soft"] <= 100 and 0 <= report["oracle_hard"] <= 100
    assert 0 < results["bound"] <= 100 and results["bound"] == results["grouping"]["bound"]


@pytest.mark.slow
def test_reported_numbers_are_recomputed(run):
    results, out, data, printed = run
    names, gt_dir = seg_names(data), data / "seg" / "SegmentationClass"
    for key, folder in (("seg", "predictions"), ("seg_untrained", "predictions_untrained")):
        value, per_class = miou(confusion(gt_dir, Path(results["paths"][folder]), names))
        assert results[key]["mIoU"] == pytest.approx(value, abs=0.011), key
        assert list(results[key]["IoU"].values()) == pytest.approx(per_class, abs=0.011), key
    assert results["miou"] == results["seg"]["mIoU"] and results["miou_untrained"] == results["seg_untrained"]["mIoU"]
    assert f"mIoU trained    {results['miou']:6.2f}" in printed
    assert f"mIoU untrained  {results['miou_untrained']:6.2f}" in printed

    # chance: predicting background everywhere
    hist = confusion(gt_dir, gt_dir, names)  # diagonal: the ground-truth pixel counts per class
    counts = np.diag(hist)
    all_background = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    all_background[:, 0] = counts
    assert results["miou_chance"]["all_background"] == pytest.approx(miou(all_background)[0], abs=0.011)
    assert f"mIoU chance     {results['miou_chance']['all_background']:6.2f}" in printed

    # classification: targets are the shards' labels; accuracy recomputed, and reproduced by evaluate_cls
    cls = json.loads(Path(results["paths"]["cls_predictions"]).read_text())
    labels = []
    for shard in sorted((data / "cls").glob("synthetic-cls-*.tar")):
        with tarfile.open(shard) as tar:
            labels += [int(tar.extractfile(m).read()) for m in sorted(tar.getmembers(), key=lambda m: m.name)
                       if m.name.endswith(".cls")]
    assert cls["targets"] == labels and len(cls["top5"]) == len(labels) == 12
    top1 = 100 * np.mean([t == p[0] for t, p in zip(cls["targets"], cls["top5"], strict=True)])
    top5 = 100 * np.mean([t in p for t, p in zip(cls["targets"], cls["top5"], strict=True)])
    assert results["top1"] == pytest.approx(top1) and results["top5"] == pytest.approx(top5)

    from datasets.builder import build_val_loader
    from segmentation.model_loading import load_eval_model
    from training.precision import FP32
    from training.zero_shot_cls import evaluate_cls
    from utils.config import load_config

    cfg = load_config(results["paths"]["config"])
    model, _ = load_eval_model(cfg, results["paths"]["checkpoint"], torch.device("cpu"))
    reference = evaluate_cls(cfg, model, build_val_loader(cfg.data), FP32,
                             torch.device("cpu"))
    assert reference["acc1"] == pytest.approx(results["top1"]) and reference["num_images"] == 12

    # curves: the history training.train returned, the same losses it logged to TensorBoard (float32 there);
    # the last epoch's evaluation is the final model's
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves = json.loads(Path(results["paths"]["curves_data"]).read_text())
    events = EventAccumulator(results["paths"]["tensorboard"], size_guidance={"scalars": 0})
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("iter/total_loss")]
    iterations = 48 // 16
    assert [step for step, _ in curves["loss"]["total_loss"]] == [step for step, _ in logged] == list(range(iterations))
    assert [v for _, v in curves["loss"]["total_loss"]] == pytest.approx([v for _, v in logged], rel=1e-6)
    assert curves["metrics"]["mIoU"][0] == [0, results["miou_untrained"]]
    assert curves["metrics"]["mIoU"][-1][1] == pytest.approx(results["miou"], abs=0.006)
    assert curves["metrics"]["top-1"][-1][1] == pytest.approx(results["top1"])
    assert curves["chance_miou"] == results["miou_chance"]["all_background"]
    phases = results["time"]["phases"]
    trained_at = (phases["data"]["wall_s"] + phases["untrained evaluation"]["wall_s"] + phases["training"]["wall_s"])
    assert curves["minutes"][-1] == [1, pytest.approx(trained_at / 60)]  # the last epoch ends when training does
    assert results["time"]["total_wall_s"] > 0 and set(results["time"]["phases"]) >= {"data", "training"}


@pytest.mark.slow
def test_existing_world_is_reused(run):
    """A second run with the same parameters does not regenerate the world: every file keeps its time stamp."""
    _, _, data, _ = run
    args = quickstart.parse_args([*ARGS, "--data-dir", str(data)])
    args.data_dir = data
    before = {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()}
    messages: list[str] = []
    quickstart.ensure_data(args, quickstart.run_config(args, None).data.img_aug.img_size, messages.append)
    assert "not regenerated" in messages[0]
    assert {p: p.stat().st_mtime_ns for p in data.rglob("*") if p.is_file()} == before


def test_another_world_in_the_data_dir_is_refused_and_kept(tmp_path):
    """A --data-dir holding another world (here another seed) is not regenerated without --overwrite."""
    data = tmp_path / "data"
    data.mkdir()
    info = {"world": "v1", "seed": 7, "train": {"length": 3}, "seg": {"num_images": 1}, "cls": {"length": 1}}
    (data / "info.json").write_text(json.dumps(info))
    (data / "train").mkdir()
    (data / "train" / "shard-000000.tar").write_bytes(b"the user's shard")
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    args = quickstart.parse_args([*ARGS, "--data-dir", str(data)])
    with pytest.raises(quickstart.UserError, match="holds another world .*seed 7.*--overwrite"):
        quickstart.ensure_data(args, 64, print)
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before


def test_shell_entry_point():
    script = ROOT / "quickstart.sh"
    assert script.stat().st_mode & 0o111
    text = script.read_text()
    assert "tools/setup_env.sh" in text and ".venv/bin/python tools/quickstart.py \"$@\"" in text
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_threshold_travels_with_the_saved_config(tmp_path):
    """main_seg.py on the saved config, pointed at another world's folder by its data root alone, keeps the
    background threshold the run chose (not the dataset config's)."""
    import main_seg
    from segmentation.evaluation import load_eval_seg_config, load_seg_config

    args = quickstart.parse_args(["--output", str(tmp_path)])
    chosen = quickstart.run_config(args, None).evaluate.seg.bg_thresh
    dataset_default = load_seg_config(quickstart.SEG_CFG).test_cfg.bg_thresh
    assert chosen is not None and chosen != dataset_default
    quickstart.save_config(quickstart.run_config(args, None), tmp_path / "quickstart_config.yml")
    other = tmp_path / "other_world" / "seg"
    cfg = main_seg.experiment_config(main_seg.parse_args(
        ["--cfg", str(tmp_path / "quickstart_config.yml"), "--opts", f"evaluate.seg.opts=[data_root={other}]"]))
    seg_cfg, _ = load_eval_seg_config(cfg.evaluate.seg)
    assert seg_cfg.data_root == str(other) and seg_cfg.test_cfg.bg_thresh == chosen
    cfg = main_seg.experiment_config(main_seg.parse_args(  # a threshold named in opts still wins
        ["--cfg", str(tmp_path / "quickstart_config.yml"), "--opts", "evaluate.seg.opts=[test_cfg.bg_thresh=0.4]"]))
    assert load_eval_seg_config(cfg.evaluate.seg)[0].test_cfg.bg_thresh == 0.4


def earlier_run(out: Path) -> dict[Path, bytes]:
    """An output folder holding what a run leaves there (a checkpoint, results); its files and their bytes."""
    (out / "train").mkdir(parents=True)
    (out / "train" / "checkpoint.pth").write_bytes(b"weights")
    (out / "quickstart_results.json").write_text("{}")
    return {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_an_earlier_run_is_refused_and_kept(tmp_path):
    out, data = tmp_path / "out", tmp_path / "data"
    files = earlier_run(out)
    with pytest.raises(quickstart.UserError, match="holds an earlier run.*--resume .*checkpoint.pth.*--overwrite"):
        quickstart.main([*ARGS, "--output", str(out), "--data-dir", str(data)])
    assert {p: p.read_bytes() for p in files} == files and not data.exists()


def test_overwrite_removes_only_the_earlier_run(tmp_path):
    out = tmp_path / "out"
    earlier_run(out)
    (out / "notes.txt").write_text("mine")
    args = quickstart.parse_args(["--output", str(out), "--overwrite"])
    quickstart.claim_output(args)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_folder_in_use_is_refused(tmp_path):
    from utils.run_lock import acquire, release

    out = tmp_path / "out"
    out.mkdir()
    lock = acquire(out)  # another run holds the folder
    try:
        with pytest.raises(quickstart.UserError, match="another run is using the output folder"):
            quickstart.main([*ARGS, "--output", str(out), "--data-dir", str(tmp_path / "data")])
    finally:
        release(lock)
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_resume_continues_an_earlier_run(run, tmp_path):
    """--resume with the checkpoint an interrupted run names trains on from it, in the same folder."""
    _, out, data, _ = run
    copy = tmp_path / "out"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("run.lock"))
    checkpoint = copy / "train" / "checkpoint.pth"
    results = quickstart.main([*ARGS, "--epochs", "2", "--pictures", "0", "--output", str(copy),
                               "--data-dir", str(data), "--resume", str(checkpoint), *OPTS])
    curves = json.loads(Path(results["paths"]["curves_data"]).read_text())
    assert [epoch for epoch, _ in curves["metrics"]["mIoU"]] == [0, 2]  # untrained, then only the second epoch
    assert [step for step, _ in curves["loss"]["total_loss"]] == [3, 4, 5]
    assert "resum" in (copy / "train" / "log.txt").read_text()
