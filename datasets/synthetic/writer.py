"""Writing a world to disk: training shards, a Pascal VOC style segmentation set, classification shards.

Every sample is drawn from ``sample_rng(seed, split, index)``, so the outputs depend on nothing else (not on the
number of workers) and the held-out sets never repeat a training image. JPEGs are written by PIL at a fixed
quality without chroma subsampling, tar members have fixed metadata, and every file appears under its final name
only once complete (``utils.atomic_files``, without fsync: the data is regenerated from its seed). ``write_world``
writes all three and ``info.json``; it is the one writer of tools/make_synthetic_data.py and tools/quickstart.py.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from functools import partial
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from utils.atomic_files import write_atomic, write_tar

from .captions import caption_for
from .render import palette, render_scene
from .spec import WorldSpec, sample_rng

JPEG_QUALITY = 90
TAR_MTIME = 0  # fixed tar metadata: identical bytes for identical samples


def _jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


def _palette_png(mask: np.ndarray, spec: WorldSpec) -> bytes:
    png = Image.fromarray(mask, mode="P")
    png.putpalette(np.asarray(palette(spec), np.uint8).ravel().tolist())
    buf = io.BytesIO()
    png.save(buf, format="PNG")
    return buf.getvalue()


def _run(task: Callable[[int], int], num_tasks: int, total: int, workers: int, desc: str | None) -> None:
    """Run ``task(i)`` (returns how many images it wrote) for i < num_tasks on ``workers`` processes."""
    with tqdm(total=total, desc=desc, unit="img", disable=desc is None) as bar:
        if workers <= 1 or num_tasks <= 1:
            for i in range(num_tasks):
                bar.update(task(i))
            return
        with Pool(min(workers, num_tasks)) as pool:  # the platform default start method; tasks are picklable
            for done in pool.imap_unordered(task, range(num_tasks)):
                bar.update(done)
            pool.close()  # the workers end on their own: terminate() (the block's exit) is left for errors and stops
            pool.join()


def _shard_name(kind: str, shard: int) -> str:
    return f"synthetic-{kind}-{shard:06d}.tar"


def _shard_info(out_dir: Path, kind: str, num_samples: int, samples_per_shard: int) -> dict[str, Any]:
    if num_samples < 1 or samples_per_shard < 1:
        raise ValueError(f"need at least one sample and one sample per shard, got {num_samples}, {samples_per_shard}")
    shards = -(-num_samples // samples_per_shard)
    return {"path": str(out_dir), "prefix": f"synthetic-{kind}-{{000000..{shards - 1:06d}}}.tar",
            "length": num_samples, "shards": shards}


def _train_shard(shard: int, out_dir: Path, num_samples: int, seed: int, spec: WorldSpec, per_shard: int) -> int:
    samples = []
    for i in range(shard * per_shard, min(num_samples, (shard + 1) * per_shard)):
        rng = sample_rng(seed, "train", i)
        image, _, objects = render_scene(rng, spec)
        samples.append({"__key__": f"{i:09d}", "jpg": _jpeg(image), "txt": caption_for(objects, spec, rng).encode()})
    write_tar(out_dir / _shard_name("train", shard), samples, mtime=TAR_MTIME, durable=False)
    return len(samples)


def write_train_shards(out_dir: str | Path, num_samples: int, spec: WorldSpec, seed: int = 0,
                       samples_per_shard: int = 1000, workers: int = 1, desc: str | None = None) -> dict[str, Any]:
    """Image-caption shards ``synthetic-train-NNNNNN.tar`` (``jpg`` + ``txt``); shard i holds samples
    [i * samples_per_shard, (i + 1) * samples_per_shard). ``desc``: show a progress bar with this label.

    Returns ``{'path', 'prefix' (brace pattern), 'length', 'shards'}`` for ``data.dataset.meta``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = _shard_info(out_dir, "train", num_samples, samples_per_shard)
    task = partial(_train_shard, out_dir=out_dir, num_samples=num_samples, seed=seed, spec=spec,
                   per_shard=samples_per_shard)
    _run(task, info["shards"], num_samples, workers, desc)
    return info


def _seg_chunk(chunk: int, root: Path, num_images: int, seed: int, spec: WorldSpec, per_chunk: int) -> int:
    indices = range(chunk * per_chunk, min(num_images, (chunk + 1) * per_chunk))
    for i in indices:
        image, mask, _ = render_scene(sample_rng(seed, "seg", i), spec)
        write_atomic(root / "JPEGImages" / f"{i:06d}.jpg", _jpeg(image), durable=False)
        write_atomic(root / "SegmentationClass" / f"{i:06d}.png", _palette_png(mask, spec), durable=False)
    return len(indices)


def write_seg_set(out_dir: str | Path, num_images: int, spec: WorldSpec, seed: int = 0, workers: int = 1,
                  desc: str | None = None) -> dict[str, Any]:
    """A held-out segmentation set in the Pascal VOC layout under ``out_dir``: ``JPEGImages/NNNNNN.jpg``,
    ``SegmentationClass/NNNNNN.png`` (palette PNG, pixel = class index, 0 background, no ignore label),
    ``ImageSets/Segmentation/val.txt``, ``classes.txt`` (one name per line, 'background' first) and
    ``dataset.json`` (classes, palette, seed, sizes). The index files are written last.

    Returns ``{'root', 'classes', 'num_images'}``."""
    root = Path(out_dir)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    per_chunk = 64
    task = partial(_seg_chunk, root=root, num_images=num_images, seed=seed, spec=spec, per_chunk=per_chunk)
    _run(task, -(-num_images // per_chunk), num_images, workers, desc)
    names = list(spec.class_names)
    write_atomic(root / "ImageSets/Segmentation/val.txt", "".join(f"{i:06d}\n" for i in range(num_images)),
                 durable=False)
    write_atomic(root / "classes.txt", "".join(f"{n}\n" for n in names), durable=False)
    meta = {"classes": names, "palette": palette(spec), "seed": seed, "image_size": spec.image_size,
            "num_images": num_images}
    write_atomic(root / "dataset.json", json.dumps(meta, indent=1) + "\n", durable=False)
    return {"root": str(root), "classes": names, "num_images": num_images}


def _cls_shard(shard: int, out_dir: Path, num_images: int, seed: int, spec: WorldSpec, per_shard: int) -> int:
    samples = []
    for i in range(shard * per_shard, min(num_images, (shard + 1) * per_shard)):
        image, _, objects = render_scene(sample_rng(seed, "cls", i), spec, num_objects=(1, 1), scale=spec.cls_scale)
        samples.append({"__key__": f"{i:09d}", "jpg": _jpeg(image), "cls": str(objects[0].label - 1).encode()})
    write_tar(out_dir / _shard_name("cls", shard), samples, mtime=TAR_MTIME, durable=False)
    return len(samples)


def write_cls_set(out_dir: str | Path, num_images: int, spec: WorldSpec, seed: int = 0, samples_per_shard: int = 1000,
                  workers: int = 1, desc: str | None = None) -> dict[str, Any]:
    """ImageNet-style classification shards ``synthetic-cls-NNNNNN.tar`` (``jpg`` + ``cls``): one large object per
    image, label 0..K-1 in the order of ``spec.class_names[1:]``, which ``classnames.txt`` lists one per line.

    Returns ``{'path', 'prefix', 'length', 'shards', 'classnames'}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = _shard_info(out_dir, "cls", num_images, samples_per_shard)
    task = partial(_cls_shard, out_dir=out_dir, num_images=num_images, seed=seed, spec=spec,
                   per_shard=samples_per_shard)
    _run(task, info["shards"], num_images, workers, desc)
    classnames = out_dir / "classnames.txt"
    write_atomic(classnames, "".join(f"{n}\n" for n in spec.class_names[1:]), durable=False)
    return {**info, "classnames": str(classnames)}


def write_world(out_dir: str | Path, spec: WorldSpec, seed: int, train: int, seg: int, cls: int,
                world: str | None = None, samples_per_shard: int = 1000, workers: int = 1,
                progress: bool = False) -> dict[str, Any]:
    """``out_dir/{train,seg,cls}`` (a count of 0 skips that part) and ``out_dir/info.json``, written last: a
    complete world or none. Returns the info dict: world name, spec, seed, image size, classes and each part's
    paths (None when skipped)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    common = dict(spec=spec, seed=seed, workers=workers)
    info = {"world": world, "spec": spec.to_json(), "seed": seed, "image_size": spec.image_size,
            "classes": list(spec.class_names),
            "train": write_train_shards(out_dir / "train", train, samples_per_shard=samples_per_shard,
                                        desc="train" if progress else None, **common) if train else None,
            "seg": write_seg_set(out_dir / "seg", seg, desc="seg" if progress else None, **common) if seg else None,
            "cls": write_cls_set(out_dir / "cls", cls, samples_per_shard=samples_per_shard,
                                 desc="cls" if progress else None, **common) if cls else None}
    write_atomic(out_dir / "info.json", json.dumps(info, indent=1) + "\n", durable=False)
    return info
