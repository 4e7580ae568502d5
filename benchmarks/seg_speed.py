"""Zero-shot segmentation speed: images/s of the segmentor on VOC-sized inputs, reference-faithful path vs ours.

    python benchmarks/seg_speed.py                       # yfcc + the small model, fp32, 1 thread
    python benchmarks/seg_speed.py --cfg configs/group_vit_gcc_yfcc_30e.yml --repeats 5 --threads 2
    python benchmarks/seg_speed.py --cfg configs/group_vit_gcc_yfcc_30e.yml --suite   # the eight benchmarks' classes

Inputs: Pascal VOC images after the VOC test pipeline (short side 448): 597x448 (a 500x375 photo, the most common
VOC size), 448x597 (portrait) and 672x448 (500x333), normalised random pixels, sliding 448x448 windows with stride
224 (2 windows each) as in the VOC config, 21 classes (VOC's text embedding). One image per call, as the evaluator
runs; the time covers ``predict`` (windows, averaging, resize to the original size, label map).

Variants, all on the same model and inputs, interleaved:
- reference: the reference segmentor (segmentation/evaluation/reference_segmentor.py): mmseg's one-window-at-a-time
  slide_inference, the image encoder twice per window, every stage's attention map resized, the reference's explicit
  attention and Conv1d projectors;
- reference-segmentor: the same segmentor structure on our current encoder (isolates the segmentor's share);
- ours: the library segmentor as ``evaluate_seg`` runs it (all windows of an image in one encoder batch, one pass
  per window, only the final group map resized, pixel-level work only in the channels some group scores, labels
  without the dense score map);
- ours-sweep4: the same with the four background thresholds of ``main_seg.py --bg-thresh 0.5 0.7 0.9 0.95`` (what
  the benchmark suite runs per image of a dataset with background: one forward, four label maps).
The label maps of 'reference' and 'ours' are compared (pixels that differ, out of all), and those of 'ours-sweep4'
with four single-threshold runs of 'ours'.

``--suite``: 'reference' and 'ours' on the same VOC-sized inputs with each of the eight suite datasets' classes and
settings (its config and class list: 21 to 171 classes, with or without background); the suite line weighs each
dataset's time per image by its number of validation images (what ``main_seg.py --suite all`` runs).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from pathlib import Path

import torch

from common import (  # isort: skip  (benchmarks/ is not a package; common puts the project on sys.path)
    BASIS_NOTE, Table, append_results, default_cfgs, machine_description, set_threads, time_interleaved, timing_basis)
from mmseg.registry import DATASETS  # noqa: E402

from models import build_model  # noqa: E402
from models.reference_faithful import reference_faithful  # noqa: E402
from segmentation.datasets import VOC_CLASSES  # noqa: E402
from segmentation.evaluation import build_segmentor, load_seg_config  # noqa: E402
from segmentation.evaluation.reference_segmentor import ReferenceSegInference  # noqa: E402
from segmentation.evaluation.suite import DATASET_CFGS, SUITE  # noqa: E402
from utils.config import load_config  # noqa: E402

VOC_CFG = "segmentation/configs/_base_/datasets/pascal_voc12.py"
SIZES = ((448, 597), (597, 448), (448, 672))  # (H, W) after the VOC pipeline; originals 375x500, 500x375, 333x500
SWEEP = (0.5, 0.7, 0.9, 0.95)
# validation images of each suite dataset (VOC 2012 val, Pascal Context val, COCO val2017, Cityscapes val, ADE20K val)
SUITE_IMAGES = {"voc21": 1449, "context60": 5105, "coco_object": 5000, "voc20": 1449, "context59": 5105,
                "coco_stuff": 5000, "cityscapes": 500, "ade20k": 2000}
SUITE_TOTAL = sum(SUITE_IMAGES.values())


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser("GroupViT segmentation speed")
    parser.add_argument("--cfg", nargs="+", default=default_cfgs(), help="configs with a model section")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (each runs every image size)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--suite", action="store_true", help="the eight suite datasets' classes instead of VOC's")
    parser.add_argument("--no-results", action="store_true", help="do not append to benchmarks/RESULTS.md")
    return parser.parse_args(argv)


def build_segmentors(cfg_path: str, device: torch.device):
    cfg = load_config(cfg_path)
    torch.manual_seed(0)
    model = build_model(cfg.model).to(device).eval()
    seg_cfg = load_seg_config(Path(__file__).resolve().parents[1] / VOC_CFG)
    ours = build_segmentor(model, list(VOC_CLASSES), seg_cfg)
    sweep = build_segmentor(model, list(VOC_CLASSES), seg_cfg, bg_threshs=SWEEP)
    ours.keep_seg_logits = sweep.keep_seg_logits = False  # as evaluate_seg runs them
    return ours, sweep, ReferenceSegInference.like(ours, seg_cfg.data_preprocessor)


def predict_all(seg, images: list[tuple[torch.Tensor, dict]], faithful_model: bool = False) -> list[torch.Tensor]:
    """Per image its label map [1, H, W] (with several thresholds: [K, H, W])."""
    from mmseg.structures import SegDataSample

    labels = []
    with torch.no_grad(), reference_faithful() if faithful_model else contextlib.nullcontext():
        for img, meta in images:
            sample = seg.predict(img, [SegDataSample(metainfo=dict(meta))])[0]
            labels.append(sample.get("pred_sem_seg_per_thresh", sample.pred_sem_seg).data)
    return labels


def bench_segmentors(cfg_path: str, images: list[tuple[torch.Tensor, dict]], repeats: int, device: torch.device,
                     table: Table) -> str:
    """Add one config's rows to ``table``; returns a note on how the label maps of 'ours' and 'reference' agree."""
    ours, sweep, ref = build_segmentors(cfg_path, device)
    variants = {"reference": lambda: predict_all(ref, images, faithful_model=True),
                "reference-segmentor": lambda: predict_all(ref, images),
                "ours": lambda: predict_all(ours, images),
                "ours-sweep4": lambda: predict_all(sweep, images)}
    print(f"\n{Path(cfg_path).name}: {len(images)} images per call, sizes {SIZES}")
    print(table.header())
    timings = time_interleaved(variants, repeats, warmup=1, device=device)
    for name, timing in timings.items():
        table.add(Path(cfg_path).stem, name, timing.rate(len(images)), timing.wall_rate(len(images)),
                  f"{timing.spread:.0%}", f"{timings['reference'].median / timing.median:.2f}x")
    labels = predict_all(ours, images)
    differ = sum(int((a != b).sum()) for a, b in zip(predict_all(ref, images, True), labels, strict=True))
    swept = predict_all(sweep, images)
    for k, thresh in enumerate(SWEEP):
        ours.bg_thresh = thresh
        differ_sweep = sum(int((a[k] != b[0]).sum()) for a, b in zip(swept, predict_all(ours, images), strict=True))
        assert differ_sweep == 0, f"the sweep's labels at bg_thresh {thresh} differ from a run at it alone"
    note = (f"{Path(cfg_path).name}: the label maps of 'ours' and 'reference' differ at {differ} of "
            f"{sum(label.numel() for label in labels)} pixels; 'ours-sweep4' equals four single-threshold runs")
    print(note)
    return note


def bench_suite(cfg_path: str, images: list[tuple[torch.Tensor, dict]], repeats: int, device: torch.device,
                table: Table) -> str:
    """One row per suite dataset (its classes and test settings, VOC-sized inputs) and the suite's total; returns a
    note on how the label maps agree."""
    torch.manual_seed(0)
    model = build_model(load_config(cfg_path).model).to(device).eval()
    totals = {"reference": 0.0, "ours": 0.0}
    differ = same_kernels = pixels = 0
    for name, cfg_file in SUITE.items():
        seg_cfg = load_seg_config(DATASET_CFGS / cfg_file)
        meta = DATASETS.get(seg_cfg.test_dataloader.dataset.type).METAINFO
        ours = build_segmentor(model, meta, seg_cfg)
        ours.keep_seg_logits = False  # as evaluate_seg runs it
        ref = ReferenceSegInference.like(ours, seg_cfg.data_preprocessor)
        variants = {"reference": lambda ref=ref: predict_all(ref, images, faithful_model=True),
                    "ours": lambda ours=ours: predict_all(ours, images)}
        timings = time_interleaved(variants, repeats, warmup=1, device=device)
        for variant, timing in timings.items():
            totals[variant] += SUITE_IMAGES[name] * timing.median / len(images)
        table.add(name, len(meta["classes"]), SUITE_IMAGES[name], timings["reference"].rate(len(images)),
                  timings["ours"].rate(len(images)), f"{timings['reference'].median / timings['ours'].median:.2f}x")
        labels = predict_all(ours, images)
        differ += sum(int((a != b).sum()) for a, b in zip(predict_all(ref, images, True), labels, strict=True))
        same_kernels += sum(int((a != b).sum()) for a, b in zip(predict_all(ref, images), labels, strict=True))
        pixels += sum(label.numel() for label in labels)
    table.add("suite", "", SUITE_TOTAL, SUITE_TOTAL / totals["reference"], SUITE_TOTAL / totals["ours"],
              f"{totals['reference'] / totals['ours']:.2f}x")
    return (f"{Path(cfg_path).name}: over the eight datasets the label maps of 'ours' and 'reference' differ at "
            f"{differ} of {pixels} pixels, and at {same_kernels} with the reference segmentor on our encoder's "
            "kernels (so the rest are group assignments that flip between fused and explicit attention). Suite row: "
            f"images/s over all {SUITE_TOTAL} validation images, each dataset's time per image "
            "weighted by its image count")


def main(argv: Sequence[str] | None = None) -> Table:
    args = parse_args(argv)
    set_threads(args.threads)
    device = torch.device(args.device)
    machine = machine_description(device)
    print(machine)
    generator = torch.Generator().manual_seed(0)
    images = [(torch.randn(1, 3, h, w, generator=generator).to(device),
               dict(ori_shape=(h * 375 // 448, w * 375 // 448), img_shape=(h, w))) for h, w in SIZES]
    notes = []
    if args.suite:
        table = Table(["dataset", "classes", "val images", "reference images/s", "ours images/s",
                       "speed-up vs reference"], [])
        print(table.header())
        for cfg_path in args.cfg:
            notes.append(bench_suite(cfg_path, images, args.repeats, device, table))
    else:
        table = Table(["model", "variant", "images/s", "wall images/s", "spread", "speed-up vs reference"], [])
        for cfg_path in args.cfg:
            notes.append(bench_segmentors(cfg_path, images, args.repeats, device, table))
    notes.append(BASIS_NOTE[timing_basis(device)])
    notes.append("random weights (seed 0); speed does not depend on the weights' values. Spread = (max - min) / median "
                 "of the repetitions.")
    if not args.no_results:
        title = ("Segmentation speed of the suite's eight datasets (VOC-sized inputs, slide 448/224)" if args.suite else
                 "Segmentation speed (VOC-sized inputs, slide 448/224; the suite's 4-threshold sweep)")
        append_results(title, machine, [table], notes)
    return table


if __name__ == "__main__":
    main()
