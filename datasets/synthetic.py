"""A synthetic image-caption world small enough to train GroupViT on a CPU in minutes (seeded, deterministic).

Scenes: 2-4 objects of 8 classes on a cluttered background. Each class has a distinct shape *and* a signature
colour (hue jittered by a few degrees, saturation and brightness varied), so a small model can tell the classes
apart from colour alone and refine with shape. Objects are saturated and bright; backgrounds (gradients, stripes,
checkers, clouds) and their clutter (thin lines, outlines, small blocks and dots) are desaturated: the
object/background boundary is always visible, while the background still varies a lot. Objects may be plain,
striped or dotted (a darker shade of the same hue), are lit by a soft gradient, and occlude earlier objects; the
mask holds the visible pixels (no anti-aliasing, so there are no ambiguous border pixels and no ignore label).

Captions read like real ones: several templates, colour, size and texture adjectives, counts ("two stars"),
spatial relations from the object positions (left of, above, next to, ...), synonyms ("ball" for circle), and
sometimes a whole class is left out (at least one is always named). Only objects that are mostly visible are
named.

Every sample is drawn from ``numpy.random.default_rng([seed, split, index])`` (split: 0 train, 1 segmentation,
2 classification), so the outputs depend on nothing else (not on the number of workers) and the held-out sets
never repeat a training image. JPEGs are written by PIL at a fixed quality without chroma subsampling, tar members
have fixed metadata, and every file appears under its final name only once complete (temporary name, then
``os.replace``).

Outputs: training shards (``jpg`` + ``txt``, the layout of the real caption data), a Pascal VOC style
segmentation set (``JPEGImages``, palette PNG ``SegmentationClass``, ``ImageSets/Segmentation/val.txt``, class
names beginning with ``background``) and ImageNet-style classification shards (``jpg`` + ``cls``).
"""

from __future__ import annotations

import colorsys
import io
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import webdataset as wds
from PIL import Image
from tqdm import tqdm


@dataclass(frozen=True)
class ObjectClass:
    name: str                        # the class name (zero-shot prompts use it)
    synonyms: tuple[str, ...]        # other nouns captions may use
    colour: str                      # the colour word captions use
    hue: float                       # signature hue in degrees
    saturation: tuple[float, float]  # range (0..1)
    value: tuple[float, float]       # brightness range (0..1)


CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("circle", ("ball", "disc"), "red", 0, (0.75, 1.0), (0.75, 1.0)),
    ObjectClass("square", ("box", "block"), "blue", 222, (0.7, 1.0), (0.7, 1.0)),
    ObjectClass("triangle", ("wedge",), "orange", 28, (0.8, 1.0), (0.85, 1.0)),
    ObjectClass("star", (), "yellow", 54, (0.75, 1.0), (0.85, 1.0)),
    ObjectClass("ring", ("donut", "hoop"), "teal", 178, (0.7, 1.0), (0.65, 0.95)),
    ObjectClass("cross", (), "green", 118, (0.7, 1.0), (0.6, 0.95)),
    ObjectClass("heart", (), "pink", 325, (0.45, 0.7), (0.9, 1.0)),
    ObjectClass("diamond", ("rhombus",), "purple", 275, (0.6, 0.9), (0.65, 0.95)),
)
CLASS_NAMES: tuple[str, ...] = ("background", *(c.name for c in CLASSES))  # mask value i <-> CLASS_NAMES[i]
TEXTURES = ("plain", "striped", "dotted")
SPLITS = {"train": 0, "seg": 1, "cls": 2}
JPEG_QUALITY = 90
TAR_MTIME = 0  # fixed tar metadata: identical bytes for identical samples


@dataclass(frozen=True)
class SceneObject:
    label: int                       # 1..K, index into CLASS_NAMES
    centre: tuple[float, float]      # (x, y) in pixels
    extent: float                    # bounding size as a fraction of the image side
    texture: str                     # one of TEXTURES
    area: int                        # pixels of the whole shape
    visible: int                     # pixels not covered by later objects (its pixels in the mask)


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of ``split`` ('train', 'seg' or 'cls')."""
    return np.random.default_rng([seed, SPLITS[split], index])


# ------------------------------------------------------------------------------------------------- rendering


@cache
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates x, y: float32 [S, S] each."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    x.flags.writeable = y.flags.writeable = False
    return x, y


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB float32 [3] in 0..255 from hue in degrees, saturation and value in 0..1."""
    return np.float32(255) * np.asarray(colorsys.hsv_to_rgb((h % 360) / 360, s, v), np.float32)


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A desaturated background colour: RGB float32 [3]."""
    return _hsv(rng.uniform(0, 360), rng.uniform(0, 0.25), rng.uniform(0.2, 0.85))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random muted pattern with clutter: float32 [S, S, 3] in 0..255."""
    x, y = _grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    proj = (x * np.cos(angle) + y * np.sin(angle)) / size  # [S, S], spans about 1.4
    kind = rng.integers(4)
    if kind == 0:  # gradient
        t = proj - proj.min()
        t /= t.max()
    elif kind == 1:  # stripes
        t = ((proj * rng.uniform(3, 10)) % 1.0 < rng.uniform(0.3, 0.7)).astype(np.float32)
    elif kind == 2:  # checkerboard
        cells = rng.integers(3, 9)
        t = ((np.floor(x * cells / size) + np.floor(y * cells / size)) % 2).astype(np.float32)
    else:  # clouds: smooth noise
        cells = int(rng.integers(3, 8))
        t = cv2.resize(rng.random((cells, cells), dtype=np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
        t = np.clip((t - t.min()) / max(float(np.ptp(t)), 1e-6), 0, 1)
    c1, c2 = _muted(rng), _muted(rng)
    image = np.ascontiguousarray(c1 + (c2 - c1) * t[..., None], dtype=np.float32)
    for _ in range(rng.integers(6, 20)):
        colour = tuple(float(v) for v in _muted(rng))
        x0, y0 = (int(v) for v in rng.uniform(0, size, 2))
        r = int(rng.uniform(0.02, 0.07) * size) + 1
        clutter = rng.integers(4)
        if clutter == 0:  # line
            dx, dy = (int(v) for v in rng.uniform(-0.4, 0.4, 2) * size)
            cv2.line(image, (x0, y0), (x0 + dx, y0 + dy), colour, int(rng.integers(1, 3)))
        elif clutter == 1:  # circle outline
            cv2.circle(image, (x0, y0), r + 2, colour, 1)
        elif clutter == 2:  # small block
            cv2.rectangle(image, (x0, y0), (x0 + r, y0 + r), colour, -1)
        else:  # dot
            cv2.circle(image, (x0, y0), max(1, r // 2), colour, -1)
    return image


def _heart_outline(points: int = 48) -> np.ndarray:
    """The classic heart curve (lobes up, point down) inside the unit circle: float32 [P, 2]."""
    t = np.linspace(0, 2 * np.pi, points, endpoint=False)
    xy = np.stack([16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))], 1)
    return (xy / 17).astype(np.float32)


def _polygon(label: int, rng: np.random.Generator) -> np.ndarray:
    """Vertices of a class's shape in the unit circle, randomly rotated: float32 [P, 2] (not for circle/ring)."""
    name = CLASS_NAMES[label]
    if name == "heart":
        pts, angle = _heart_outline(), rng.uniform(-25, 25)
    elif name == "diamond":
        w = rng.uniform(0.55, 0.7)
        pts, angle = np.array([[0, -1], [w, 0], [0, 1], [-w, 0]], np.float32), rng.uniform(-20, 20)
    elif name == "cross":
        w = 0.34
        pts = np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w], [-1, w],
                        [-1, -w], [-w, -w]], np.float32)
        angle = rng.uniform(0, 90)
    else:  # regular: square, triangle, star
        corners = {"square": 4, "triangle": 3, "star": 10}[name]
        t = np.arange(corners) * 2 * np.pi / corners
        radius = np.where(np.arange(corners) % 2, 0.42, 1.0) if name == "star" else 1.0
        pts, angle = np.stack([radius * np.sin(t), -radius * np.cos(t)], 1), rng.uniform(0, 360)
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32)
    return pts.astype(np.float32) @ rot.T


def _subpixel(v: np.ndarray | float) -> np.ndarray:
    """Coordinates in cv2's fixed point with 4 fractional bits (``shift=4``)."""
    return np.round(np.asarray(v) * 16).astype(np.int32)


def _shape(label: int, centre: np.ndarray, radius: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """The pixels of one object (no anti-aliasing): bool [S, S]."""
    canvas = np.zeros((size, size), np.uint8)
    name = CLASS_NAMES[label]
    if name in ("circle", "ring"):
        xy = tuple(int(v) for v in _subpixel(centre))
        cv2.circle(canvas, xy, int(_subpixel(radius)), 1, -1, cv2.LINE_8, 4)
        if name == "ring":
            cv2.circle(canvas, xy, int(_subpixel(radius * rng.uniform(0.45, 0.6))), 0, -1, cv2.LINE_8, 4)
    else:
        cv2.fillPoly(canvas, [_subpixel(centre + radius * _polygon(label, rng))], 1, cv2.LINE_8, 4)
    return canvas.astype(bool)


def _paint(label: int, texture: str, centre: np.ndarray, radius: float, ys: np.ndarray, xs: np.ndarray,
           rng: np.random.Generator) -> np.ndarray:
    """Colours of an object's pixels (given by ``ys``, ``xs`` [N]): float32 [N, 3]."""
    c = CLASSES[label - 1]
    colour = _hsv(c.hue + rng.uniform(-6, 6), rng.uniform(*c.saturation), rng.uniform(*c.value))
    dx, dy = xs + 0.5 - centre[0], ys + 0.5 - centre[1]
    angle = rng.uniform(0, 2 * np.pi)
    shade = 1 - 0.15 * (dx * np.cos(angle) + dy * np.sin(angle)) / radius  # soft light from one side
    period = max(3.0, radius * rng.uniform(0.4, 0.6))
    if texture == "striped":
        shade *= np.where((dx * np.sin(angle) - dy * np.cos(angle)) / period % 1 < 0.5, 0.7, 1.0)
    elif texture == "dotted":
        shade *= np.where(np.hypot(dx / period % 1 - 0.5, dy / period % 1 - 0.5) < 0.28, 0.7, 1.0)
    return colour * shade[:, None].astype(np.float32)


def _place(rng: np.random.Generator, size: int, radius: float, placed: Sequence[tuple[np.ndarray, float]]
           ) -> np.ndarray:
    """A centre inside the image, preferring limited overlap with ``placed`` (centre, radius) pairs: [2]."""
    for _ in range(12):
        centre = rng.uniform(radius, size - radius, 2)
        if all(np.hypot(*(centre - c)) >= 0.75 * (radius + r) for c, r in placed):
            break
    return centre


def render_scene(rng: np.random.Generator, size: int, num_objects: tuple[int, int] = (2, 4),
                 scale: tuple[float, float] = (0.25, 0.5)) -> tuple[np.ndarray, np.ndarray, list[SceneObject]]:
    """Draw a scene: image uint8 [S, S, 3] RGB, mask uint8 [S, S] (0 background, 1..K class), objects in drawing
    order (later ones occlude earlier ones).

    ``num_objects``: inclusive range of the object count; ``scale``: range of an object's bounding size as a
    fraction of the image side (scaled down a little in crowded scenes).
    """
    image = _background(rng, size)
    mask = np.zeros((size, size), np.uint8)
    instances = np.zeros((size, size), np.uint8)  # 1 + drawing index, for the visible pixel counts
    count = int(rng.integers(num_objects[0], num_objects[1] + 1))
    crowding = 1.0 if count <= 3 else 0.85
    drawn: list[tuple[int, np.ndarray, float, str, int]] = []
    for i in range(count):
        label = int(rng.integers(1, len(CLASSES) + 1))
        radius = size * rng.uniform(*scale) * crowding / 2
        centre = _place(rng, size, radius, [(c, r) for _, c, r, _, _ in drawn])
        pixels = _shape(label, centre, radius, size, rng)
        ys, xs = np.nonzero(pixels)
        texture = TEXTURES[rng.choice(len(TEXTURES), p=[0.5, 0.25, 0.25])]
        image[ys, xs] = _paint(label, texture, centre, radius, ys, xs, rng)
        mask[ys, xs] = label
        instances[ys, xs] = i + 1
        drawn.append((label, centre, radius, texture, len(ys)))
    image += 3 * rng.standard_normal(image.shape, dtype=np.float32)  # sensor noise
    visible = np.bincount(instances.ravel(), minlength=count + 1)[1:]
    objects = [SceneObject(label, (float(c[0]), float(c[1])), 2 * r / size, texture, area, int(v))
               for (label, c, r, texture, area), v in zip(drawn, visible, strict=True)]
    return np.clip(image, 0, 255).round().astype(np.uint8), mask, objects


# -------------------------------------------------------------------------------------------------- captions

_NUMBERS = {2: "two", 3: "three", 4: "four"}
_LIST_TEMPLATES = (
    "{objs}", "a photo of {objs}", "a picture of {objs}", "an image with {objs}", "there {be} {objs} here",
    "{objs} on a cluttered background", "a drawing of {objs}", "{objs} in front of a busy background",
    "a close-up of {objs}", "here we see {objs}", "my collection: {objs}",
)
_RELATIONS = {
    "left": ("to the left of", "left of", "on the left of"),
    "right": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
    "near": ("next to", "beside", "near"),
}
_SIZES = {"big": ("big", "large", "huge"), "small": ("small", "little", "tiny")}


def _plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("s", "x", "sh", "ch")) else "s")


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def relation(a: SceneObject, b: SceneObject) -> str:
    """Where ``a`` is relative to ``b``: 'left', 'right', 'above', 'below' or 'near' (no clear direction)."""
    dx, dy = a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]
    if abs(dx) > 1.5 * abs(dy):
        return "left" if dx < 0 else "right"
    if abs(dy) > 1.5 * abs(dx):
        return "above" if dy < 0 else "below"
    return "near"


def nameable(objects: Sequence[SceneObject]) -> list[SceneObject]:
    """The objects a caption may name: at least 40 % visible (the last drawn object always is)."""
    return [o for o in objects if o.visible >= 0.4 * o.area]


def _phrase(group: Sequence[SceneObject], rng: np.random.Generator) -> str:
    """A noun phrase for the objects of one class, e.g. 'a big striped red ball' or 'two stars'."""
    c = CLASSES[group[0].label - 1]
    noun = str(rng.choice(c.synonyms)) if c.synonyms and rng.random() < 0.25 else c.name
    words = [c.colour] if rng.random() < 0.6 else []
    if len(group) > 1:
        return " ".join([_NUMBERS[len(group)], *words, _plural(noun)])
    o = group[0]
    if o.texture != "plain" and rng.random() < 0.3:
        words.insert(0, o.texture)
    if rng.random() < 0.3 and (o.extent > 0.42 or o.extent < 0.3):
        words.insert(0, str(rng.choice(_SIZES["big" if o.extent > 0.42 else "small"])))
    return _with_article(" ".join([*words, noun]))


def caption_for(objects: Sequence[SceneObject], rng: np.random.Generator) -> str:
    """A caption for a scene of at least one object. It names only classes of nameable objects (at least one,
    counts and relations from the scene); with probability 0.3 one class of a multi-class scene is left out."""
    shown = nameable(objects)
    groups: dict[int, list[SceneObject]] = {}
    for o in shown:
        groups.setdefault(o.label, []).append(o)
    labels = [int(v) for v in rng.permutation(sorted(groups))]
    if len(labels) > 1 and rng.random() < 0.3:
        labels.pop()
    phrases = [_phrase(groups[label], rng) for label in labels]
    singles = [label for label in labels if len(groups[label]) == 1]
    if len(singles) >= 2 and rng.random() < 0.5:  # "A <relation> B", then the others
        a, b = groups[singles[0]][0], groups[singles[1]][0]
        rel = str(rng.choice(_RELATIONS[relation(a, b)]))
        pa, pb = phrases[labels.index(a.label)], phrases[labels.index(b.label)]
        rest = [p for p, label in zip(phrases, labels, strict=True) if label not in (a.label, b.label)]
        objs = f"{pa} {rel} {pb}" + (f" and {_join(rest)}" if rest else "")
    else:
        objs = _join(phrases)
    be = "is" if phrases[0].startswith(("a ", "an ")) else "are"
    text = str(rng.choice(_LIST_TEMPLATES)).format(objs=objs, be=be)
    if rng.random() < 0.7:
        text += "."
    return text[0].upper() + text[1:] if rng.random() < 0.3 else text


_CLASS_WORDS = {w: i + 1 for i, c in enumerate(CLASSES) for n in (c.name, *c.synonyms) for w in (n, _plural(n))}


def classes_in_caption(caption: str) -> set[int]:
    """The class labels (1..K) a caption names, synonyms and plurals included."""
    return {_CLASS_WORDS[w] for w in re.findall(r"[a-z]+", caption.lower()) if w in _CLASS_WORDS}


# --------------------------------------------------------------------------------------------------- writers


def _jpeg(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    return buf.getvalue()


def _palette_png(mask: np.ndarray) -> bytes:
    png = Image.fromarray(mask, mode="P")
    png.putpalette(np.asarray(palette(), np.uint8).ravel().tolist())
    buf = io.BytesIO()
    png.save(buf, format="PNG")
    return buf.getvalue()


def palette() -> list[list[int]]:
    """Mask colours: black background, then each class's signature colour (RGB 0..255) [K + 1][3]."""
    return [[0, 0, 0]] + [[round(float(v)) for v in _hsv(c.hue, sum(c.saturation) / 2, sum(c.value) / 2)]
                          for c in CLASSES]


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name next to ``path``, then rename: ``path`` is never half-written."""
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_bytes(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def _tar(samples: Sequence[dict[str, Any]]) -> bytes:
    """A webdataset tar of samples whose values are bytes, with fixed member metadata."""
    buf = io.BytesIO()
    with wds.TarWriter(buf, encoder=False, mtime=TAR_MTIME) as tar:
        for sample in samples:
            tar.write(sample)
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


def _shard_name(kind: str, shard: int) -> str:
    return f"synthetic-{kind}-{shard:06d}.tar"


def _shard_info(out_dir: Path, kind: str, num_samples: int, samples_per_shard: int) -> dict[str, Any]:
    if num_samples < 1 or samples_per_shard < 1:
        raise ValueError(f"need at least one sample and one sample per shard, got {num_samples}, {samples_per_shard}")
    shards = -(-num_samples // samples_per_shard)
    return {"path": str(out_dir), "prefix": f"synthetic-{kind}-{{000000..{shards - 1:06d}}}.tar",
            "length": num_samples, "shards": shards}


def _train_shard(shard: int, out_dir: Path, num_samples: int, seed: int, image_size: int, per_shard: int) -> int:
    samples = []
    for i in range(shard * per_shard, min(num_samples, (shard + 1) * per_shard)):
        rng = sample_rng(seed, "train", i)
        image, _, objects = render_scene(rng, image_size)
        samples.append({"__key__": f"{i:09d}", "jpg": _jpeg(image),
                        "txt": caption_for(objects, rng).encode()})
    _write_atomic(out_dir / _shard_name("train", shard), _tar(samples))
    return len(samples)


def write_train_shards(out_dir: str | Path, num_samples: int, seed: int = 0, image_size: int = 96,
                       samples_per_shard: int = 1000, workers: int = 1, desc: str | None = None) -> dict[str, Any]:
    """Image-caption shards ``synthetic-train-NNNNNN.tar`` (``jpg`` + ``txt``); shard i holds samples
    [i * samples_per_shard, (i + 1) * samples_per_shard). ``desc``: show a progress bar with this label.

    Returns ``{'path', 'prefix' (brace pattern), 'length', 'shards'}`` for ``data.dataset.meta``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = _shard_info(out_dir, "train", num_samples, samples_per_shard)
    task = partial(_train_shard, out_dir=out_dir, num_samples=num_samples, seed=seed, image_size=image_size,
                   per_shard=samples_per_shard)
    _run(task, info["shards"], num_samples, workers, desc)
    return info


def _seg_chunk(chunk: int, root: Path, num_images: int, seed: int, image_size: int, per_chunk: int) -> int:
    indices = range(chunk * per_chunk, min(num_images, (chunk + 1) * per_chunk))
    for i in indices:
        image, mask, _ = render_scene(sample_rng(seed, "seg", i), image_size)
        _write_atomic(root / "JPEGImages" / f"{i:06d}.jpg", _jpeg(image))
        _write_atomic(root / "SegmentationClass" / f"{i:06d}.png", _palette_png(mask))
    return len(indices)


def write_seg_set(out_dir: str | Path, num_images: int, seed: int = 0, image_size: int = 96, workers: int = 1,
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
    task = partial(_seg_chunk, root=root, num_images=num_images, seed=seed, image_size=image_size,
                   per_chunk=per_chunk)
    _run(task, -(-num_images // per_chunk), num_images, workers, desc)
    _write_atomic(root / "ImageSets/Segmentation/val.txt", "".join(f"{i:06d}\n" for i in range(num_images)).encode())
    _write_atomic(root / "classes.txt", "".join(f"{n}\n" for n in CLASS_NAMES).encode())
    meta = {"classes": list(CLASS_NAMES), "palette": palette(), "seed": seed, "image_size": image_size,
            "num_images": num_images}
    _write_atomic(root / "dataset.json", (json.dumps(meta, indent=1) + "\n").encode())
    return {"root": str(root), "classes": list(CLASS_NAMES), "num_images": num_images}


def _cls_shard(shard: int, out_dir: Path, num_images: int, seed: int, image_size: int, per_shard: int) -> int:
    samples = []
    for i in range(shard * per_shard, min(num_images, (shard + 1) * per_shard)):
        image, _, objects = render_scene(sample_rng(seed, "cls", i), image_size, num_objects=(1, 1),
                                         scale=(0.45, 0.75))
        samples.append({"__key__": f"{i:09d}", "jpg": _jpeg(image), "cls": str(objects[0].label - 1).encode()})
    _write_atomic(out_dir / _shard_name("cls", shard), _tar(samples))
    return len(samples)


def write_cls_set(out_dir: str | Path, num_images: int, seed: int = 0, image_size: int = 96,
                  samples_per_shard: int = 1000, workers: int = 1, desc: str | None = None) -> dict[str, Any]:
    """ImageNet-style classification shards ``synthetic-cls-NNNNNN.tar`` (``jpg`` + ``cls``): one large object per
    image, label 0..K-1 in the order of ``CLASS_NAMES[1:]``, which ``classnames.txt`` lists one per line.

    Returns ``{'path', 'prefix', 'length', 'shards', 'classnames'}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = _shard_info(out_dir, "cls", num_images, samples_per_shard)
    task = partial(_cls_shard, out_dir=out_dir, num_images=num_images, seed=seed, image_size=image_size,
                   per_shard=samples_per_shard)
    _run(task, info["shards"], num_images, workers, desc)
    classnames = out_dir / "classnames.txt"
    _write_atomic(classnames, "".join(f"{n}\n" for n in CLASS_NAMES[1:]).encode())
    return {**info, "classnames": str(classnames)}
