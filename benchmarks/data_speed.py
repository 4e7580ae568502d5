"""Training data pipeline speed: images/s of one worker, stage by stage, on webdataset shards of photos.

    python benchmarks/data_speed.py                        # yfcc data settings (DeiT augmentation, 3 noun prompts)
    python benchmarks/data_speed.py --cfg configs/quickstart.yml --samples 400

Shards: ``--samples`` JPEGs (quality 95, short side 512, as img2dataset writes them with ``--image_size 512
--resize_mode keep_ratio``) made from scikit-image's sample photos (random crops and flips, so every JPEG differs),
with generated captions of 8-25 words, written to a temporary folder. One process, no DataLoader workers, one torch
thread: the numbers are per DataLoader worker. Stages, each including the previous ones:

1. read: tar members from the shards (webdataset);
2. decode: ``wds.decode('pil')`` and the pixels loaded;
3. image augmentation: ``datasets.build_img_transform(True, data.img_aug)`` (DeiT: random-resized crop, flip,
   RandAugment, normalise, random erasing; or the simpler crop + flip when ``deit_aug`` is false);
4. tokenize: the caption to [77] ids (``datasets.Tokenize``);
5. nouns: ``datasets.build_text_transform(True, data.text_aug)`` when ``multi_label`` > 0 (part-of-speech tagging
   and M prompts, [1 + M, 77]) instead of 4.;
6. loader: the whole ``datasets.build_train_loader`` (num_workers 0; shuffle buffer and batching included).

Worker sweep (``--workers 1 4 8 15``): the whole loader with that many DataLoader workers (uint8 images, batches of
64, the shards cycled) for ``--sweep-images`` images after its first batch, on the wall clock: the images/s a
training process gets from this machine (GPU machine: 16 cores, so up to 15 workers beside the training process).
"""

from __future__ import annotations

import argparse
import io
import random
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from PIL import Image

from common import (  # isort: skip  (benchmarks/ is not a package; common puts the project on sys.path)
    NOUNS, ROOT, Table, append_results, machine_description, set_threads)

from datasets import Tokenize, build_img_transform, build_text_transform, build_train_loader  # noqa: E402
from datasets.builder import loader_workers  # noqa: E402
from utils.atomic_files import write_tar  # noqa: E402
from utils.config import apply_opts, load_config  # noqa: E402

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "cat")
ADJECTIVES = ("red", "small", "old", "happy", "wooden", "bright", "tall", "young", "empty", "busy")
VERBS = ("sitting on", "running along", "standing next to", "looking at", "parked near", "lying under")


def caption(rng: random.Random) -> str:
    parts = [f"a {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(VERBS)} the {rng.choice(NOUNS)}"]
    while len(" ".join(parts).split()) < rng.randint(8, 25):
        parts.append(f"with a {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} in the {rng.choice(NOUNS)}")
    return " ".join(parts) + "."


def write_shards(folder: Path, samples: int, per_shard: int = 100, seed: int = 0) -> str:
    """``samples`` jpg + txt pairs in shards ``bench-000000.tar``...; returns the brace pattern of their names."""
    import skimage.data

    rng, photos = random.Random(seed), [getattr(skimage.data, name)()[..., :3] for name in PHOTOS]
    shards = (samples + per_shard - 1) // per_shard
    for shard in range(shards):
        pairs = []
        for index in range(shard * per_shard, min(samples, (shard + 1) * per_shard)):
            photo = photos[index % len(photos)]
            h, w = photo.shape[:2]
            top, left = rng.randint(0, h // 4), rng.randint(0, w // 4)
            image = Image.fromarray(photo[top:top + h * 3 // 4 + 1, left:left + w * 3 // 4 + 1])
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            scale = 512 / min(image.size)
            image = image.resize((round(image.width * scale * rng.uniform(1, 1.5)), round(image.height * scale)))
            jpeg = io.BytesIO()
            image.save(jpeg, format="JPEG", quality=95)
            pairs.append({"__key__": f"{index:08d}", "jpg": jpeg.getvalue(), "txt": caption(rng).encode()})
        write_tar(folder / f"bench-{shard:06d}.tar", pairs)
    return f"bench-{{000000..{shards - 1:06d}}}.tar"


def stage_stream(urls: list[str], image_fn: Callable | None, text_fn: Callable | None, decode: bool) -> Iterator:
    import webdataset as wds

    samples = wds.tarfile_to_samples()(iter([{"url": u} for u in urls]))
    if not decode:
        yield from samples
        return
    samples = wds.decode("pil")(samples)
    for sample in samples:
        image = sample["jpg"]
        image.load()
        yield (image_fn(image) if image_fn else image), (text_fn(sample["txt"]) if text_fn else sample["txt"])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser("GroupViT data pipeline speed (per worker)")
    parser.add_argument("--cfg", default=str(ROOT / "configs" / "group_vit_gcc_yfcc_30e.yml"),
                        help="config whose data section is measured")
    parser.add_argument("--opts", nargs="+", help="config overrides (key=value)")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[],
                        help="worker counts of the loader sweep (none: no sweep); -1 = data.num_workers=-1")
    parser.add_argument("--sweep-images", type=int, default=2000, help="images timed per worker count")
    parser.add_argument("--no-results", action="store_true", help="do not append to benchmarks/RESULTS.md")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Table:
    args = parse_args(argv)
    set_threads(1)
    cfg = apply_opts(load_config(args.cfg), args.opts)
    data = cfg.data
    machine = machine_description()
    print(machine)
    table = Table(["stage", "images/s", "ms/image", "+ms vs previous", "spread"], [])
    with tempfile.TemporaryDirectory() as tmp:
        most = max([loader_workers(w) for w in args.workers] + [1])
        pattern = write_shards(Path(tmp), args.samples, per_shard=max(1, min(100, args.samples // most)))
        urls = sorted(str(p) for p in Path(tmp).glob("bench-*.tar"))
        image_fn = build_img_transform(True, data.img_aug)
        tokenize = Tokenize(max_seq_len=data.text_aug.max_seq_len)
        multi = data.text_aug.multi_label
        stages: dict[str, Callable[[], Iterator]] = {
            "read": lambda: stage_stream(urls, None, None, decode=False),
            "decode": lambda: stage_stream(urls, None, None, decode=True),
            "image augmentation": lambda: stage_stream(urls, image_fn, None, decode=True),
            "tokenize": lambda: stage_stream(urls, image_fn, tokenize, decode=True),
        }
        if multi:
            stages[f"nouns (M={multi})"] = lambda: stage_stream(
                urls, image_fn, build_text_transform(True, data.text_aug), decode=True)
        loader_cfg = OmegaConf.merge(data, {"num_workers": 0, "batch_size": 25, "dataset": {
            "meta": {"bench": {"type": "img_txt_pair", "path": tmp, "prefix": pattern, "length": args.samples}},
            "train": ["bench"]}})
        stages["loader (build_train_loader)"] = lambda: (
            sample for _, sample in zip(range(args.samples // 25), build_train_loader(loader_cfg), strict=False))
        seconds = {name: [] for name in stages}
        for rep in range(args.repeats + 1):  # the first pass warms the page cache and the taggers
            for name, stream in stages.items():
                random.seed(rep)
                np.random.seed(rep)
                torch.manual_seed(rep)
                start = time.process_time()
                count = sum(1 for _ in stream())
                if rep:
                    seconds[name].append((time.process_time() - start) / (count * (25 if "loader" in name else 1)))
        previous = None
        print(table.header())
        for name, values in seconds.items():
            per_image = float(np.median(values))
            spread = (max(values) - min(values)) / per_image
            table.add(name, 1 / per_image, 1000 * per_image,
                      None if previous is None or "loader" in name else 1000 * (per_image - previous),
                      f"{spread:.0%}")
            previous = per_image
        sweep = worker_sweep(args, loader_cfg)
    notes = [f"{Path(args.cfg).name}: img_aug {dict(data.img_aug)}; text_aug multi_label {multi}, "
             f"tagger {data.text_aug.get('tagger', 'auto')}; {args.samples} JPEGs of short side 512, quality 95",
             "times are the process's CPU time per image (one thread, no workers): what one DataLoader worker "
             "delivers on an otherwise idle core; median of the repetitions, spread = (max - min) / median"]
    if sweep.rows:
        notes.append(f"worker sweep: the whole loader (uint8 images, batch 64), {args.sweep_images} images after the "
                     "first batch, wall clock")
    if not args.no_results:
        append_results("Data pipeline speed (one worker)", machine, [table] + ([sweep] if sweep.rows else []), notes)
    return table


def worker_sweep(args: argparse.Namespace, loader_cfg) -> Table:
    """images/s of ``build_train_loader`` with each of ``--workers`` DataLoader workers (wall clock)."""
    sweep = Table(["workers", "loader images/s", "per worker"], [])
    if args.workers:
        print(sweep.header())
    for workers in args.workers:
        cfg = OmegaConf.merge(loader_cfg, {"num_workers": workers, "uint8_images": True, "batch_size": 64,
                                           "dataset": {"meta": {"bench": {"length": args.sweep_images + 64}}}})
        batches = iter(build_train_loader(cfg))
        next(batches)  # the workers have started
        start, count = time.perf_counter(), sum(len(batch["image"]) for batch in batches)
        rate = count / (time.perf_counter() - start)
        sweep.add(loader_workers(workers), rate, rate / max(1, loader_workers(workers)))
    return sweep


if __name__ == "__main__":
    main()
