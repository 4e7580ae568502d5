"""Segmenting a folder: images/s of demo_seg.py's folder mode against the one-image form, on the same images.

    python benchmarks/folder_seg_speed.py                      # the full yfcc model, 20 VOC-sized images, on the CPU
    python benchmarks/folder_seg_speed.py --shell-images 5     # the shell loop on the first 5 images only

Inputs: 20 VOC-sized photos (500x375 and 375x500 JPEGs) cut from skimage.data's pictures; the full-size model of
configs/group_vit_gcc_yfcc_30e.yml with random weights (seed 0; the speed does not depend on the weights' values),
saved as a checkpoint; the VOC classes, whole-image mode (the demo's default); every variant writes each image's
label map as a palette PNG.

Variants:
- shell loop: ``python demo/demo_seg.py --input IMG --vis pred`` once per image (a new process each: imports,
  model load, class embeddings, one image);
- one-image path: what that command does after loading, called per image in one process with the model and
  segmentor built once (read_image, segment_image, the 'pred' picture);
- folder: ``segmentation.folder.segment_folder`` as ``demo_seg.py --input FOLDER`` runs it (DataLoader workers read
  and resize, --batch-size images per encoder pass), into a fresh output folder each time.
The one-image path and the folder mode are timed interleaved (``common.time_interleaved``, wall clock, after an
untimed warmup of each on two images); the shell loop once. The label maps of the folder mode and the one-image
path are compared.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch

from common import (  # isort: skip  (benchmarks/ is not a package; common puts the project on sys.path)
    ROOT, Table, append_results, machine_description, time_interleaved)
from PIL import Image  # noqa: E402

from models import build_model  # noqa: E402
from segmentation.datasets import VOCABULARY_PRESETS  # noqa: E402
from segmentation.evaluation import build_segmentor  # noqa: E402
from segmentation.folder import segment_folder  # noqa: E402
from segmentation.image_files import list_images, read_image  # noqa: E402
from segmentation.inference import segment_image  # noqa: E402
from segmentation.label_outputs import LabelOutputs, run_description  # noqa: E402
from segmentation.vis import visualize_sample  # noqa: E402
from utils.config import load_config  # noqa: E402

CFG = ROOT / "configs" / "group_vit_gcc_yfcc_30e.yml"
PICTURES = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "cat",
            "colorwheel", "camera", "coins")  # bundled with scikit-image: nothing is downloaded
VOC_SIZES = ((500, 375), (375, 500))  # (width, height): the two most common Pascal VOC shapes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="folder mode vs the one-image demo")
    parser.add_argument("--images", type=int, default=20, help="VOC-sized images (default 20)")
    parser.add_argument("--shell-images", type=int, default=None,
                        help="images for the shell loop (default: all; its rate is per image either way)")
    parser.add_argument("--batch-size", type=int, default=4, help="the folder mode's --batch-size (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="the folder mode's --workers (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repetitions of the in-process variants")
    parser.add_argument("--no-results", action="store_true", help="print only; do not append to RESULTS.md")
    return parser.parse_args(argv)


def write_images(folder: Path, count: int) -> list[Path]:
    """``count`` VOC-sized JPEGs: crops of skimage.data's pictures, resized, alternately landscape and portrait."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        rgb = getattr(skimage.data, PICTURES[i % len(PICTURES)])()
        rgb = np.stack([rgb] * 3, axis=-1) if rgb.ndim == 2 else rgb[..., :3]
        width, height = VOC_SIZES[i % 2]
        paths.append(folder / f"img{i:02d}.jpg")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(cv2.resize(rgb, (width, height)), cv2.COLOR_RGB2BGR))
    return paths


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    model = build_model(load_config(CFG).model).eval()
    work = Path(tempfile.mkdtemp(prefix="folder_seg_speed_"))
    try:
        checkpoint = work / "random.pth"
        torch.save({"model": model.state_dict()}, checkpoint)
        paths = write_images(work / "images", args.images)
        dataset_cfg, meta = VOCABULARY_PRESETS["voc"]
        seg_model = build_segmentor(model, meta, dataset_cfg, opts=["test_cfg.mode=whole"])
        images = list_images(str(work / "images"))

        def one_image_path(chosen: Sequence[Path] = paths) -> None:
            for path in chosen:
                inputs, sample = segment_image(seg_model, read_image(path), name=path)
                visualize_sample(seg_model, inputs, sample, ["pred"], work / "single", path.stem)

        def folder(chosen: Sequence = images) -> None:
            shutil.rmtree(work / "folder", ignore_errors=True)
            seg_model.keep_seg_logits = False  # as demo_seg.py's folder mode
            outputs = LabelOutputs(work / "folder", run_description(seg_model))
            try:
                segment_folder(seg_model, chosen, outputs, batch_size=args.batch_size, workers=args.workers,
                               progress=False)
            finally:
                seg_model.keep_seg_logits = True

        one_image_path(paths[:2])  # warmup on two images: the full model is slow on a shared CPU
        folder(images[:2])
        machine = machine_description()
        timings = time_interleaved({"one-image path": one_image_path, "folder": folder}, args.repeats, warmup=0)
        differ = sum(int((np.asarray(Image.open(work / "single" / "pred" / f"{p.stem}.png"))
                          != np.asarray(Image.open(work / "folder" / "labels" / f"{p.stem}.png"))).sum())
                     for p in paths)
        pixels = sum(h * w for w, h in (VOC_SIZES[i % 2] for i in range(len(paths))))

        shell_paths = paths[:args.shell_images or len(paths)]
        start = time.perf_counter()
        for path in shell_paths:
            subprocess.run([sys.executable, str(ROOT / "demo" / "demo_seg.py"), "--cfg", str(CFG), "--resume",
                            str(checkpoint), "--input", str(path), "--vis", "pred", "--device", "cpu",
                            "--output_dir", str(work / "shell")], check=True, capture_output=True, cwd=ROOT)
        shell_rate = len(shell_paths) / (time.perf_counter() - start)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    folder_rate = timings["folder"].rate(len(paths))
    table = Table(["variant", "images", "images/s", "spread", "folder mode speed-up"], [])
    table.add("shell loop over the one-image command", len(shell_paths), f"{shell_rate:.3g}", "",
              f"{folder_rate / shell_rate:.2f}x")
    for name in ("one-image path", "folder"):
        table.add(name, len(paths), f"{timings[name].rate(len(paths)):.3g}", f"{timings[name].spread:.0%}",
                  f"{folder_rate / timings[name].rate(len(paths)):.2f}x")
    notes = [f"full-size model of {CFG.name} with random weights (seed 0), VOC classes, whole-image mode, "
             f"{len(paths)} JPEGs of 500x375 / 375x500 from skimage.data; folder mode --batch-size "
             f"{args.batch_size} --workers {args.workers}; images/s = wall clock (the in-process variants: median of "
             f"{args.repeats} interleaved repetitions after a warmup on two images; the shell loop: once)",
             f"label maps of the folder mode vs the one-image path: {differ} of {pixels} pixels differ"]
    print(machine)
    print(table.markdown())
    for note in notes:
        print(f"- {note}")
    if not args.no_results:
        append_results("Folder segmentation vs the one-image demo", machine, [table], notes)


if __name__ == "__main__":
    main()
