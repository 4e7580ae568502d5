"""Does ``torch.compile`` (inductor, with or without weight freezing) speed up the segmentor on CPU, and do its
label maps stay the same? A probe for the suite's ">= 3x the reference-faithful path" target.

    OMP_NUM_THREADS=1 python benchmarks/seg_compile_probe.py --cfg configs/group_vit_gcc_yfcc_30e.yml

'ours' of seg_speed.py (VOC-sized inputs, slide 448/224, 21 classes) three ways on the same weights: eager, the image
encoder compiled (inductor), and compiled with ``torch._inductor.config.freezing`` (weights folded in as constants,
oneDNN-packed). Prints and appends images/s (seg_speed.py's basis), the time of the compiling first pass and the
pixels whose label differs from eager.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from common import (  # isort: skip  (benchmarks/ is not a package; common puts the project on sys.path)
    BASIS_NOTE, Table, append_results, machine_description, set_threads, time_interleaved, timing_basis)
from seg_speed import SIZES, build_segmentors, predict_all  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser("segmentor compile probe")
    parser.add_argument("--cfg", default="configs/group_vit_gcc_yfcc_30e.yml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-results", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    set_threads(args.threads)
    device = torch.device("cpu")
    machine = machine_description(device)
    print(machine)
    generator = torch.Generator().manual_seed(0)
    images = [(torch.randn(1, 3, h, w, generator=generator),
               dict(ori_shape=(h * 375 // 448, w * 375 // 448), img_shape=(h, w))) for h, w in SIZES]
    eager, _, _ = build_segmentors(args.cfg, device)
    eager_labels = predict_all(eager, images)
    variants, compile_s, differ = {"eager": eager}, {"eager": None}, {"eager": 0}
    for name, freezing in (("compiled", False), ("compiled+freezing", True)):
        seg = copy.deepcopy(eager)
        torch._inductor.config.freezing = freezing  # read when the graph is compiled, at its first call
        seg.model.img_encoder.compile(dynamic=False)
        start = time.perf_counter()
        labels = predict_all(seg, images)
        compile_s[name] = time.perf_counter() - start
        differ[name] = sum(int((a != b).sum()) for a, b in zip(eager_labels, labels, strict=True))
        variants[name] = seg
    timings = time_interleaved({name: lambda seg=seg: predict_all(seg, images) for name, seg in variants.items()},
                               args.repeats, warmup=1, device=device)
    table = Table(["variant", "images/s", "wall images/s", "spread", "vs eager", "first pass (s)",
                   "labels differing"], [])
    print(table.header())
    for name, timing in timings.items():
        table.add(name, timing.rate(len(images)), timing.wall_rate(len(images)), f"{timing.spread:.0%}",
                  f"{timings['eager'].median / timing.median:.2f}x", compile_s[name],
                  f"{differ[name]} of {sum(label.numel() for label in eager_labels)}")
    if not args.no_results:
        append_results("Segmentor with torch.compile on CPU (VOC-sized inputs, slide 448/224)", machine, [table],
                       [BASIS_NOTE[timing_basis(device)], f"model: {args.cfg}, random weights (seed 0)"])


if __name__ == "__main__":
    main()
