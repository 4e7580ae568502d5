"""Does grouping emerge on the synthetic world? A sweep of quickstart variants, each trained for a wall-clock budget.

    python benchmarks/quickstart_sweep.py --out-dir DIR                    # all variants, 40 s each (a GPU)
    python benchmarks/quickstart_sweep.py --variants base one_stage --budget 120 --device cpu

Data live in memory on the device (no loader): the synthetic world's images and tokenized captions (caption + 3
noun prompts drawn once per sample, as ``data.text_aug`` does per epoch) and a held-out segmentation set. Training
is the quickstart config's (``configs/quickstart.yml``: AdamW, lr = base_lr x batch / 4096, clipping at
train.clip_grad) under bf16 autocast, with a cosine schedule over the steps the budget allows (5 % warmup) and a
random resized crop (area 0.5-1) + flip per sample by an affine grid.

Each variant is evaluated before training, at step 300 (about the CPU main command's training, 5 epochs of 20,000
pairs at batch 128) and at the end, with two numbers:
- mIoU: the real zero-shot rule (``segmentation/evaluation``'s segmentor) at the synthetic config's bg_thresh;
- oracle: each final group labelled with its majority ground-truth class, the best that ANY labelling of the
  groups can reach. When it stays low, the groups themselves do not follow the objects.
Results: a table on stdout, ``results.json`` and ``results.md`` in --out-dir.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from common import ROOT, Table, machine_description  # isort: skip  (common puts the project on sys.path)

import datasets.synthetic as syn  # noqa: E402
from datasets import Tokenize, WordAugTokenizeWrapper  # noqa: E402
from datasets.synthetic import WorldSpec  # noqa: E402
from models import build_model  # noqa: E402
from models.group_vit import AssignAttention  # noqa: E402
from segmentation.evaluation import build_segmentor, load_seg_config  # noqa: E402
from segmentation.evaluation.group_vit_seg import chained_assignments, upsample_token_map  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.optimizer import build_optimizer  # noqa: E402

SEG_CFG = ROOT / "segmentation/configs/_base_/datasets/synthetic.py"
ONE_STAGE = {"img_encoder.depths": [2, 1], "img_encoder.num_group_tokens": [8, 0], "img_encoder.num_output_groups": [8],
             "img_encoder.embed_factors": [1, 1], "img_encoder.num_heads": [4, 4]}
WORLDS_BY_NAME = {"cluttered": syn.WorldSpec(), "plain": syn.WorldSpec(background="plain")}
# name -> (world, model overrides, AssignAttention attributes, base_lr factor)
VARIANTS = {
    "base": ("cluttered", {}, {}, 1.0),
    "plain_background": ("plain", {}, {}, 1.0),
    "no_gumbel": ("cluttered", {}, {"gumbel": False}, 1.0),
    "assign_scale_1": ("cluttered", {}, {"scale": 1.0}, 1.0),
    "soft_assignment": ("cluttered", {"img_encoder.hard_assignment": False}, {}, 1.0),
    "one_stage": ("cluttered", ONE_STAGE, {}, 1.0),
    "lr_x4": ("cluttered", {}, {}, 4.0),
    "patch_4": ("cluttered", {"img_encoder.patch_size": 4, "img_encoder.num_group_tokens": [32, 8, 0],
                              "img_encoder.num_output_groups": [32, 8]}, {}, 1.0),
    "plain_no_gumbel": ("plain", {}, {"gumbel": False}, 1.0),
}


# --------------------------------------------------------------------------------------------- data


def _train_chunk(args: tuple[WorldSpec, int, int]) -> tuple[np.ndarray, np.ndarray]:
    spec, start, stop = args
    np.random.seed(start)  # the noun prompts' draws
    to_tokens = WordAugTokenizeWrapper(Tokenize(), max_word=3)
    images, texts = [], []
    for i in range(start, stop):
        rng = syn.sample_rng(0, "train", i)
        image, _, objects = syn.render_scene(rng, spec)
        images.append(image)
        texts.append(to_tokens(syn.caption_for(objects, spec, rng)).numpy())
    return np.stack(images), np.stack(texts)  # [n, S, S, 3] uint8, [n, 4, 77]


def _seg_chunk(args: tuple[WorldSpec, int, int]) -> tuple[np.ndarray, np.ndarray]:
    spec, start, stop = args
    scenes = [syn.render_scene(syn.sample_rng(0, "seg", i), spec)[:2] for i in range(start, stop)]
    return np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes])


def make_world(world: str, train: int, seg: int, size: int, workers: int, device: torch.device) -> dict:
    """Images uint8 [N, S, S, 3], texts [N, 4, 77], seg images and masks [M, S, S], all on ``device``."""
    spec = replace(WORLDS_BY_NAME[world], image_size=size)
    with Pool(workers) as pool:
        parts = pool.map(_train_chunk, [(spec, s, min(train, s + 500)) for s in range(0, train, 500)])
        segs = pool.map(_seg_chunk, [(spec, s, min(seg, s + 100)) for s in range(0, seg, 100)])
    cat = lambda arrays: torch.from_numpy(np.concatenate(arrays)).to(device)  # noqa: E731
    return {"images": cat([p[0] for p in parts]), "texts": cat([p[1] for p in parts]),
            "seg_images": cat([s[0] for s in segs]), "seg_masks": cat([s[1] for s in segs]).long()}


# --------------------------------------------------------------------------------------------- training


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, S, S, 3] RGB -> float [B, 3, S, S] with the data pipeline's ImageNet mean/std (timm's)."""
    mean = 255 * images.new_tensor(IMAGENET_DEFAULT_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = 255 * images.new_tensor(IMAGENET_DEFAULT_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() - mean) / std


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float] = (0.5, 1.0)) -> torch.Tensor:
    """Per sample: a crop of area ``scale`` and aspect 3/4..4/3, resized back, flipped with probability 0.5."""
    B = x.shape[0]
    rand = lambda: torch.rand(B, device=x.device)  # noqa: E731
    area = scale[0] + (scale[1] - scale[0]) * rand()
    aspect = torch.exp(math.log(3 / 4) + math.log(16 / 9) * rand())
    width, height = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
    theta = torch.zeros(B, 2, 3, device=x.device)
    theta[:, 0, 0] = width * torch.where(rand() < 0.5, -1.0, 1.0)
    theta[:, 1, 1] = height
    theta[:, 0, 2] = (2 * rand() - 1) * (1 - width)
    theta[:, 1, 2] = (2 * rand() - 1) * (1 - height)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="reflection", align_corners=False)


def build(cfg, overrides: dict, assign: dict, device: torch.device) -> torch.nn.Module:
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = model_cfg
        for part in path:
            node = node[part]
        node[last] = value
    model = build_model(model_cfg).to(device)
    for module in model.modules():
        if isinstance(module, AssignAttention):
            for name, value in assign.items():
                setattr(module, name, value)
    return model


def majority_labels(groups: torch.Tensor, labels: torch.Tensor, num_groups: int, num_classes: int) -> torch.Tensor:
    """Each pixel gets the most frequent label of its group (ties: the lowest label): [B, P] from [B, P] each."""
    counts = F.one_hot(groups, num_groups).float().transpose(1, 2) @ F.one_hot(labels, num_classes).float()  # [B, G, K]
    return counts.argmax(-1).gather(1, groups)


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: dict, seg_cfg) -> dict[str, float]:
    """Zero-shot mIoU (the real rule), oracle mIoU and final groups used per image, on the held-out set."""
    model.eval()
    names = list(syn.WorldSpec().class_names)
    segmentor = build_segmentor(model, names, seg_cfg)
    K = len(names)
    hist = {"mIoU": 0, "oracle": 0}
    used = []
    for start in range(0, len(data["seg_images"]), 250):
        x = normalise(data["seg_images"][start:start + 250])
        gt = data["seg_masks"][start:start + 250]  # [B, H, W]
        H, W = x.shape[-2:]
        out = model.img_encoder(x, return_feat=True, return_attn=True, as_dict=True)
        pred = segmentor.decode(out, H, W).argmax(1)  # [B, H, W]
        groups = upsample_token_map(chained_assignments(out["attn_dicts"])[-1], H, W).argmax(1).flatten(1)  # [B, HW]
        oracle = majority_labels(groups, gt.flatten(1), out["feat"].shape[1], K)  # [B, HW]
        used += [len(g.unique()) for g in groups]
        for name, p in (("mIoU", pred.flatten(1)), ("oracle", oracle)):
            hist[name] = hist[name] + torch.bincount(gt.flatten() * K + p.flatten(), minlength=K * K).view(K, K)
    model.train()
    result = {}
    for name, h in hist.items():
        h = h.double()
        result[name] = round(100 * (h.diag() / (h.sum(0) + h.sum(1) - h.diag())).nanmean().item(), 2)
    result["groups"] = round(float(np.mean(used)), 2)
    return result


def run_variant(name: str, cfg, data: dict, seg_cfg, args: argparse.Namespace, device: torch.device) -> dict:
    world, overrides, assign, lr_factor = VARIANTS[name]
    torch.manual_seed(args.seed)
    model = build(cfg, overrides, assign, device)
    lr = cfg.train.base_lr * lr_factor * args.batch_size / 4096
    optimizer = build_optimizer(OmegaConf.merge(cfg.train, {"base_lr": lr}), model)
    history = [{"step": 0, **evaluate(model, data, seg_cfg)}]
    total, evals, start, step = 10**9, {300}, time.perf_counter(), 0
    while step < total:
        if step == 20:  # the budget in steps, from the first 20
            if device.type == "cuda":
                torch.cuda.synchronize()
            total = max(21, int(args.budget / ((time.perf_counter() - start) / 20)))
            evals.add(total)
        warmup = max(1, total // 20)
        progress = (step - warmup) / max(1, total - warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr * step / warmup if step < warmup else 0.5 * lr * (1 + math.cos(math.pi * progress))
        index = torch.randint(0, len(data["images"]), (args.batch_size,), device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            losses = model.forward_train(random_resized_crop(normalise(data["images"][index])), data["texts"][index])
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad)
        optimizer.step()
        step += 1
        if step in evals:
            history.append({"step": step, "loss": round(loss.item(), 3), **evaluate(model, data, seg_cfg)})
            print(f"  {name} step {step}: {history[-1]}", flush=True)
    seconds = time.perf_counter() - start
    return {"name": name, "world": world, "overrides": overrides, "assign": assign, "lr": lr, "steps": total,
            "seconds": round(seconds, 1), "history": history}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser("quickstart grouping sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--budget", type=float, default=40, help="training seconds per variant (evaluations excluded)")
    p.add_argument("--train-samples", type=int, default=40000)
    p.add_argument("--seg-images", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out-dir", default=os.environ.get("OUT") or "bench_out")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    device = torch.device(args.device)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(ROOT / "configs" / "quickstart.yml")
    seg_cfg = load_seg_config(SEG_CFG)
    size = cfg.data.img_aug.img_size
    print(machine_description(device), flush=True)
    worlds = {}
    for world in dict.fromkeys(VARIANTS[v][0] for v in args.variants):
        tic = time.perf_counter()
        worlds[world] = make_world(world, args.train_samples, args.seg_images, size, args.workers, device)
        print(f"world {world}: {args.train_samples} pairs, {args.seg_images} held-out images "
              f"({time.perf_counter() - tic:.0f} s)", flush=True)
    results = []
    for name in args.variants:
        results.append(run_variant(name, cfg, worlds[VARIANTS[name][0]], seg_cfg, args, device))
        (out / "results.json").write_text(json.dumps(results, indent=1))
    table = Table(["variant", "steps", "mIoU @0", "mIoU @300", "mIoU end", "oracle @0", "oracle @300", "oracle end",
                   "groups end"], [])
    print(table.header(), flush=True)
    for r in results:
        at = {h["step"]: h for h in r["history"]}
        mid = at.get(300, {})
        end = r["history"][-1]
        table.add(r["name"], r["steps"], at[0]["mIoU"], mid.get("mIoU"), end["mIoU"], at[0]["oracle"],
                  mid.get("oracle"), end["oracle"], end["groups"])
    (out / "results.md").write_text(f"{machine_description(device)}\n\n{table.markdown()}\n")
    return results


if __name__ == "__main__":
    main()
