"""Does segmentation emerge from captions? Quickstart variants trained and diagnosed on the project's own pieces.

    python benchmarks/quickstart_sweep.py --variants v1_2stage chosen --out-dir DIR     # a few minutes each on CPU
    python benchmarks/quickstart_sweep.py --variants chosen --train-samples 12800 --epochs 5   # the quickstart's run

A variant is a world (a ``WorldSpec``) plus config overrides of ``configs/quickstart.yml`` (the same ``--opts`` the
quickstart takes). Each is trained with the project's training step (``training.step.train_step``), optimizer,
learning-rate scaling and schedule (``utils.lr_scheduler``) and evaluated with the zero-shot segmentor
(``segmentation/evaluation``) that ``./quickstart.sh`` uses. Only the data differ from the quickstart's: the
world's images and tokenized captions (caption + noun prompts drawn once per sample, as ``data.text_aug`` does per
epoch) live in memory, and the random-resized crop (area ``img_scale``) + flip is done per sample by an affine grid.

Evaluated before training, after each epoch and at the end, on the held-out split of the training world:
- mIoU: the zero-shot rule at the chosen background threshold, chosen on a validation world (another world seed's
  held-out split), never on the held-out set; ``mIoU@cfg`` at the config's own bg_thresh;
- bound: the world's patch-grid bound (each patch labelled with its majority true class, upsampled, argmax);
- oracle soft / hard: each final group (soft chain, as the segmentor uses it / hard chain) labelled with its
  majority true class, the best any labelling of these groups reaches;
- groups: final groups used per image (soft chain); s0 max-prob: the stage-0 soft map's mean max-probability;
- label agreement: the share of object pixels whose group's zero-shot class (before the background rule) is that
  group's majority true class;
- top-1: zero-shot classification of the world's classification split.
At the end also mIoU on the held-out split of a second world seed (--seed2). Results: a table on stdout,
``results.json`` and ``results.md`` in --out-dir.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
from datasets.synthetic import WORLDS, WorldSpec  # noqa: E402
from models import build_model  # noqa: E402
from segmentation.evaluation import build_segmentor, load_seg_config  # noqa: E402
from segmentation.evaluation.diagnostics import BG_THRESHOLDS, grouping_diagnostics, patch_grid_bound  # noqa: E402
from training.precision import FP32, resolve_precision  # noqa: E402
from training.rng import set_random_seed  # noqa: E402
from training.run import scaled_train_config  # noqa: E402
from training.step import train_step  # noqa: E402
from training.zero_shot_cls import evaluate_cls  # noqa: E402
from utils.config import apply_opts, load_config  # noqa: E402
from utils.lr_scheduler import build_scheduler  # noqa: E402
from utils.optimizer import build_optimizer  # noqa: E402

SEG_CFG = ROOT / "segmentation/configs/_base_/datasets/synthetic.py"



@dataclass(frozen=True)
class Variant:
    world: WorldSpec
    opts: tuple[str, ...] = ()


# Every variant states its layout, init and learning rate, so that it does not depend on configs/quickstart.yml.
ONE_STAGE = ("model.img_encoder.depths=[2,1]", "model.img_encoder.num_group_tokens=[16,0]",
             "model.img_encoder.num_output_groups=[16]", "model.img_encoder.embed_factors=[1,1]",
             "model.img_encoder.num_heads=[4,4]")
TWO_STAGE = ("model.img_encoder.depths=[2,2,1]", "model.img_encoder.num_group_tokens=[16,8,0]",
             "model.img_encoder.num_output_groups=[16,8]", "model.img_encoder.embed_factors=[1,1,1]",
             "model.img_encoder.num_heads=[4,4,4]")
REF_INIT, INIT = ("model.img_encoder.assign_init_scale=[1.0,1.0]",), ("model.img_encoder.assign_init_scale=[6.0,4.0]",)
LR, LR_X2 = ("train.base_lr=1.6e-2",), ("train.base_lr=3.2e-2",)
NO_GROUP_LOSS, GROUP_LOSS = ("model.group_loss_weight=0.0",), ("model.group_loss_weight=1.0",)
CHOSEN = (*ONE_STAGE, *INIT, *LR_X2, *GROUP_LOSS)
V1, V2, V3 = WORLDS["v1"], WORLDS["v2"], WORLDS["v3"]
VARIANTS: dict[str, Variant] = {
    "v1_2stage": Variant(V1, (*TWO_STAGE, *REF_INIT, *LR, *NO_GROUP_LOSS)),  # the old quickstart
    "chosen": Variant(V3, CHOSEN),  # configs/quickstart.yml
    "chosen_no_group_loss": Variant(V3, (*ONE_STAGE, *INIT, *LR_X2, *NO_GROUP_LOSS)),
    "chosen_no_init": Variant(V3, (*ONE_STAGE, *REF_INIT, *LR_X2, *GROUP_LOSS)),
    "chosen_lr_x1": Variant(V3, (*ONE_STAGE, *INIT, *LR, *GROUP_LOSS)),
    "chosen_2stage": Variant(V3, (*TWO_STAGE, *INIT, *LR_X2, *GROUP_LOSS)),
    "chosen_64px": Variant(V2, CHOSEN),  # world v2: v3 at 64 px
    "chosen_v1_world": Variant(replace(V1, image_size=V3.image_size), CHOSEN),
    "chosen_untied": Variant(replace(V3, colour_tied_to_class=False), CHOSEN),
}


# --------------------------------------------------------------------------------------------- data


def _train_chunk(args: tuple[WorldSpec, int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    spec, seed, start, stop, max_word = args
    np.random.seed(start)  # the noun prompts' draws
    to_tokens = WordAugTokenizeWrapper(Tokenize(), max_word=max_word)
    images, texts = [], []
    for i in range(start, stop):
        rng = syn.sample_rng(seed, "train", i)
        image, _, objects = syn.render_scene(rng, spec)
        images.append(image)
        texts.append(to_tokens(syn.caption_for(objects, spec, rng)).numpy())
    return np.stack(images), np.stack(texts)  # [n, S, S, 3] uint8, [n, 1 + max_word, 77]


def _held_out_chunk(args: tuple[WorldSpec, int, str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    spec, seed, split, start, stop = args
    if split == "cls":
        scenes = [syn.render_scene(syn.sample_rng(seed, "cls", i), spec, num_objects=(1, 1), scale=spec.cls_scale)
                  for i in range(start, stop)]
        return np.stack([s[0] for s in scenes]), np.array([s[2][0].label - 1 for s in scenes])
    scenes = [syn.render_scene(syn.sample_rng(seed, "seg", i), spec)[:2] for i in range(start, stop)]
    return np.stack([s[0] for s in scenes]), np.stack([s[1] for s in scenes])


def make_data(spec: WorldSpec, args: argparse.Namespace, max_word: int, pool: Pool) -> dict[str, torch.Tensor]:
    """The training pairs (``images``, ``texts``), held-out ``seg`` / ``seg_masks`` (seed), ``val`` / ``val_masks``
    (validation seed), ``seg2`` / ``seg2_masks`` (second seed) and ``cls`` / ``cls_labels``."""
    n, step = args.train_samples, 500
    parts = pool.map(_train_chunk, [(spec, args.seed, s, min(n, s + step), max_word) for s in range(0, n, step)])
    data = {"images": np.concatenate([p[0] for p in parts]), "texts": np.concatenate([p[1] for p in parts])}
    for name, seed, split, count in (("seg", args.seed, "seg", args.seg_images),
                                     ("val", args.val_seed, "seg", args.seg_images),
                                     ("seg2", args.seed2, "seg", args.seg_images),
                                     ("cls", args.seed, "cls", args.cls_images)):
        chunks = pool.map(_held_out_chunk, [(spec, seed, split, s, min(count, s + 100)) for s in range(0, count, 100)])
        data[name] = np.concatenate([c[0] for c in chunks])
        data[f"{name}_{'labels' if split == 'cls' else 'masks'}"] = np.concatenate([c[1] for c in chunks])
    return {k: torch.from_numpy(v) for k, v in data.items()}


def normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, S, S, 3] RGB -> float [B, 3, S, S] with the data pipeline's ImageNet mean/std (timm's)."""
    mean = 255 * images.new_tensor(IMAGENET_DEFAULT_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = 255 * images.new_tensor(IMAGENET_DEFAULT_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() - mean) / std


def random_resized_crop(x: torch.Tensor, scale: Sequence[float]) -> torch.Tensor:
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


# --------------------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate_held_out(model: torch.nn.Module, data: dict, seg_cfg, cfg, names: Sequence[str], bg: float | None) -> dict:
    """Every diagnostic on the held-out split; ``bg``: the background threshold (None: the best on ``val``)."""
    model.eval()
    segmentor = build_segmentor(model, list(names), seg_cfg, template=cfg.evaluate.seg.template)
    if bg is None:
        scores = grouping_diagnostics(segmentor, normalise(data["val"]), data["val_masks"])["miou_by_bg"]
        bg = max(scores, key=scores.get)
    held = grouping_diagnostics(segmentor, normalise(data["seg"]), data["seg_masks"])
    by_bg = held.pop("miou_by_bg")
    result = {"bg": bg, "mIoU": by_bg[bg], "mIoU@cfg": by_bg.get(segmentor.bg_thresh), **held,
              "top1": classify(model, data, cfg, names[1:])}
    model.train()
    return result


def classify(model: torch.nn.Module, data: dict, cfg, classnames: Sequence[str]) -> float:
    """Top-1 (%) of the project's one zero-shot classifier (``training.zero_shot_cls.evaluate_cls``) on the in-memory
    classification set."""
    cls_cfg = OmegaConf.merge(cfg, {"evaluate": {"cls": {"classnames": list(classnames)}}})
    batches = [{"image": normalise(data["cls"][start:start + 250]), "target": data["cls_labels"][start:start + 250]}
               for start in range(0, len(data["cls"]), 250)]
    device = next(model.parameters()).device
    return round(evaluate_cls(cls_cfg, model, batches, FP32, device)["acc1"], 2)


@torch.no_grad()
def second_seed(model: torch.nn.Module, data: dict, seg_cfg, cfg, names: Sequence[str], bg: float) -> float:
    model.eval()
    segmentor = build_segmentor(model, list(names), seg_cfg, template=cfg.evaluate.seg.template)
    result = grouping_diagnostics(segmentor, normalise(data["seg2"]), data["seg2_masks"], thresholds=[bg])
    model.train()
    return result["miou_by_bg"][bg]


# --------------------------------------------------------------------------------------------- training


def variant_config(variant: Variant, args: argparse.Namespace):
    cfg = load_config(ROOT / "configs" / "quickstart.yml")
    OmegaConf.set_struct(cfg, True)
    opts = [f"data.batch_size={args.batch_size}", f"train.epochs={args.epochs}", f"seed={args.seed}",
            f"train.seed={args.seed}", f"model.img_encoder.img_size={variant.world.image_size}",
            f"data.img_aug.img_size={variant.world.image_size}", *variant.opts, *args.opts]
    return apply_opts(cfg, opts)


def run_variant(name: str, args: argparse.Namespace, pool: Pool) -> dict:
    variant = VARIANTS[name]
    cfg = variant_config(variant, args)
    spec, names = variant.world, variant.world.class_names
    tic = time.perf_counter()
    data = make_data(spec, args, cfg.data.text_aug.multi_label, pool)
    data_s = time.perf_counter() - tic
    seg_opts = [*cfg.evaluate.seg.opts] if cfg.evaluate.seg.get("opts") else []
    seg_cfg = load_seg_config(SEG_CFG, seg_opts)
    masks = data["seg_masks"]
    bound = round(patch_grid_bound(masks, cfg.model.img_encoder.patch_size, len(names)), 2)
    print(f"{name}: data {data_s:.0f} s, bound {bound}, opts {list(variant.opts) + list(args.opts)}", flush=True)

    train_cfg = scaled_train_config(cfg, world_size=1)
    set_random_seed(cfg.seed)
    device = torch.device("cpu")
    model = build_model(cfg.model).to(device)
    optimizer = build_optimizer(train_cfg, model)
    iters = len(data["images"]) // cfg.data.batch_size
    scheduler = build_scheduler(train_cfg, optimizer, iters)
    precision = resolve_precision(cfg.train, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.use_scaler)
    history = [{"step": 0, **evaluate_held_out(model, data, seg_cfg, cfg, names, args.bg)}]
    print(f"  step 0: {history[-1]}", flush=True)
    generator = torch.Generator().manual_seed(cfg.seed)
    train_s, step = 0.0, 0
    for epoch in range(cfg.train.epochs):
        order = torch.randperm(len(data["images"]), generator=generator)
        tic = time.perf_counter()
        for idx in range(iters):
            index = order[idx * cfg.data.batch_size:(idx + 1) * cfg.data.batch_size]
            image = random_resized_crop(normalise(data["images"][index]), cfg.data.img_aug.img_scale)
            losses, _, _ = train_step(model, {"image": image, "text": data["texts"][index]}, optimizer, scaler,
                                   precision, cfg.train.clip_grad)
            step += 1
            scheduler.step_update(epoch * iters + idx)
        train_s += time.perf_counter() - tic
        if epoch + 1 in args.eval_epochs or epoch + 1 == cfg.train.epochs:
            results = evaluate_held_out(model, data, seg_cfg, cfg, names, args.bg)
            history.append({"step": step, "epoch": epoch + 1, "loss": round(losses["total_loss"].item(), 3),
                            "train_s": round(train_s, 1), **results})
            print(f"  epoch {epoch + 1} step {step}: {history[-1]}", flush=True)
    end = history[-1]
    end["mIoU_seed2"] = second_seed(model, data, seg_cfg, cfg, names, end["bg"])
    print(f"  second seed: {end['mIoU_seed2']}", flush=True)
    return {"name": name, "spec": spec.to_json(), "opts": list(variant.opts) + list(args.opts), "bound": bound,
            "steps": step, "train_s": round(train_s, 1), "data_s": round(data_s, 1), "history": history}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser("quickstart emergence sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--train-samples", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--eval-epochs", type=int, nargs="*", default=[], help="also evaluate after these epochs")
    p.add_argument("--seg-images", type=int, default=200)
    p.add_argument("--cls-images", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0, help="training world seed (its seg split is the held-out set)")
    p.add_argument("--val-seed", type=int, default=1000, help="world seed whose seg split chooses bg_thresh")
    p.add_argument("--seed2", type=int, default=1, help="second world seed, held-out split evaluated at the end")
    p.add_argument("--bg", type=float, choices=BG_THRESHOLDS, help="fixed background threshold (default: chosen)")
    p.add_argument("--opts", nargs="*", default=[], help="extra config overrides for every variant")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-dir", default=os.environ.get("OUT") or "bench_out")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(machine_description(torch.device("cpu")), flush=True)
    results = []
    with Pool(args.workers) as pool:
        for name in args.variants:
            results.append(run_variant(name, args, pool))
            (out / "results.json").write_text(json.dumps(results, indent=1))
    table = Table(["variant", "bound", "steps", "train s", "mIoU @0", "mIoU", "mIoU seed 2", "bg", "oracle soft",
                   "oracle hard", "groups", "s0 max-prob", "label agr.", "top-1"], [])
    print(table.header(), flush=True)
    for r in results:
        start, end = r["history"][0], r["history"][-1]
        table.add(r["name"], r["bound"], r["steps"], r["train_s"], start["mIoU"], end["mIoU"], end["mIoU_seed2"],
                  end["bg"], f"{start['oracle_soft']} -> {end['oracle_soft']}",
                  f"{start['oracle_hard']} -> {end['oracle_hard']}", f"{start['groups']} -> {end['groups']}",
                  f"{start['s0_max']} -> {end['s0_max']}", f"{start['label_agreement']} -> {end['label_agreement']}",
                  end["top1"])
    (out / "results.md").write_text(f"{machine_description(torch.device('cpu'))}\n\n{table.markdown()}\n")
    return results


if __name__ == "__main__":
    main()
