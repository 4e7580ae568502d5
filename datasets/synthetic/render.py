"""Drawing one scene of a world: a background, then objects that occlude earlier ones, and the exact mask.

Objects are saturated and bright; backgrounds (gradients, stripes, checkers, clouds) and their clutter (thin lines,
outlines, small blocks and dots) are desaturated: the object/background boundary is always visible, while the
background still varies a lot. Objects may be plain, striped or dotted (a darker shade of the same hue), are lit
by a soft gradient, and occlude earlier objects; the mask holds the visible pixels (no anti-aliasing, so there are
no ambiguous border pixels and no ignore label).
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

from .spec import TEXTURES, ObjectClass, WorldSpec


@dataclass(frozen=True)
class SceneObject:
    label: int                       # 1..K, index into WorldSpec.class_names
    centre: tuple[float, float]      # (x, y) in pixels
    extent: float                    # bounding size as a fraction of the image side
    texture: str                     # one of TEXTURES
    area: int                        # pixels of the whole shape
    visible: int                     # pixels not covered by later objects (its pixels in the mask)
    colour: str                      # the colour word of its paint


@cache
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates x, y: float32 [S, S] each."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    x.flags.writeable = y.flags.writeable = False
    return x, y


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB float32 [3] in 0..255 from hue in degrees, saturation and value in 0..1."""
    return np.float32(255) * np.asarray(colorsys.hsv_to_rgb((h % 360) / 360, s, v), np.float32)


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A desaturated background colour: RGB float32 [3]."""
    return hsv(rng.uniform(0, 360), rng.uniform(0, 0.25), rng.uniform(0.2, 0.85))


def _plain_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """One muted colour, no clutter: float32 [S, S, 3]."""
    return np.ascontiguousarray(np.broadcast_to(_muted(rng), (size, size, 3)), dtype=np.float32)


def _cluttered_background(rng: np.random.Generator, size: int) -> np.ndarray:
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


def _polygon(name: str, rng: np.random.Generator) -> np.ndarray:
    """Vertices of a class's shape in the unit circle, randomly rotated: float32 [P, 2] (not for circle/ring/moon)."""
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
    elif name == "arrow":
        pts = np.array([[0, -1], [0.7, -0.25], [0.28, -0.25], [0.28, 1], [-0.28, 1], [-0.28, -0.25], [-0.7, -0.25]],
                       np.float32)
        angle = rng.uniform(0, 360)
    else:  # regular: square, triangle, star, pentagon, hexagon
        corners = {"square": 4, "triangle": 3, "star": 10, "pentagon": 5, "hexagon": 6}[name]
        t = np.arange(corners) * 2 * np.pi / corners
        radius = np.where(np.arange(corners) % 2, 0.42, 1.0) if name == "star" else 1.0
        pts, angle = np.stack([radius * np.sin(t), -radius * np.cos(t)], 1), rng.uniform(0, 360)
    a = np.deg2rad(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32)
    return pts.astype(np.float32) @ rot.T


def _subpixel(v: np.ndarray | float) -> np.ndarray:
    """Coordinates in cv2's fixed point with 4 fractional bits (``shift=4``)."""
    return np.round(np.asarray(v) * 16).astype(np.int32)


def _shape(name: str, centre: np.ndarray, radius: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """The pixels of one object (no anti-aliasing): bool [S, S]."""
    canvas = np.zeros((size, size), np.uint8)
    if name in ("circle", "ring", "moon"):
        xy = tuple(int(v) for v in _subpixel(centre))
        cv2.circle(canvas, xy, int(_subpixel(radius)), 1, -1, cv2.LINE_8, 4)
        if name == "ring":
            cv2.circle(canvas, xy, int(_subpixel(radius * rng.uniform(0.45, 0.6))), 0, -1, cv2.LINE_8, 4)
        elif name == "moon":  # a crescent: the disc less a disc of the same size moved sideways
            a = rng.uniform(0, 2 * np.pi)
            bite = tuple(int(v) for v in _subpixel(centre + radius * 0.55 * np.array([np.cos(a), np.sin(a)])))
            cv2.circle(canvas, bite, int(_subpixel(radius * 0.85)), 0, -1, cv2.LINE_8, 4)
    else:
        cv2.fillPoly(canvas, [_subpixel(centre + radius * _polygon(name, rng))], 1, cv2.LINE_8, 4)
    return canvas.astype(bool)


def _paint(paint: ObjectClass, texture: str, centre: np.ndarray, radius: float, ys: np.ndarray, xs: np.ndarray,
           rng: np.random.Generator) -> np.ndarray:
    """Colours of an object's pixels (given by ``ys``, ``xs`` [N]) in ``paint``'s colour: float32 [N, 3]."""
    colour = hsv(paint.hue + rng.uniform(-6, 6), rng.uniform(*paint.saturation), rng.uniform(*paint.value))
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


def render_scene(rng: np.random.Generator, spec: WorldSpec, num_objects: tuple[int, int] | None = None,
                 scale: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray, list[SceneObject]]:
    """Draw a scene of ``spec``'s world: image uint8 [S, S, 3] RGB, mask uint8 [S, S] (0 background, 1..K class),
    objects in drawing order (later ones occlude earlier ones).

    ``num_objects`` / ``scale``: the spec's ranges unless given (the classification set draws one large object).
    """
    size, classes = spec.image_size, spec.classes
    num_objects, scale = num_objects or spec.num_objects, scale or spec.scale
    background = _cluttered_background if spec.background == "cluttered" else _plain_background
    image = background(rng, size)
    mask = np.zeros((size, size), np.uint8)
    instances = np.zeros((size, size), np.uint8)  # 1 + drawing index, for the visible pixel counts
    count = int(rng.integers(num_objects[0], num_objects[1] + 1))
    crowding = 0.85 if count >= spec.crowded_from else 1.0
    free_paints = list(range(len(classes)))  # untied colours: the paints not used yet in this image
    drawn: list[tuple[int, np.ndarray, float, str, int, str]] = []
    for i in range(count):
        label = int(rng.integers(1, len(classes) + 1))
        paint = classes[label - 1]
        if not spec.colour_tied_to_class:
            paint = classes[free_paints.pop(int(rng.integers(len(free_paints))))]
        radius = size * rng.uniform(*scale) * crowding / 2
        centre = _place(rng, size, radius, [d[1:3] for d in drawn])
        pixels = _shape(classes[label - 1].name, centre, radius, size, rng)
        ys, xs = np.nonzero(pixels)
        texture = TEXTURES[rng.choice(len(TEXTURES), p=list(spec.texture_probs))]
        image[ys, xs] = _paint(paint, texture, centre, radius, ys, xs, rng)
        mask[ys, xs] = label
        instances[ys, xs] = i + 1
        drawn.append((label, centre, radius, texture, len(ys), paint.colour))
    image += 3 * rng.standard_normal(image.shape, dtype=np.float32)  # sensor noise
    visible = np.bincount(instances.ravel(), minlength=count + 1)[1:]
    objects = [SceneObject(label, (float(c[0]), float(c[1])), 2 * r / size, texture, area, int(v), colour)
               for (label, c, r, texture, area, colour), v in zip(drawn, visible, strict=True)]
    return np.clip(image, 0, 255).round().astype(np.uint8), mask, objects


def palette(spec: WorldSpec) -> list[list[int]]:
    """Mask colours: black background, then each class's signature colour (RGB 0..255) [K + 1][3]."""
    return [[0, 0, 0]] + [[round(float(v)) for v in hsv(c.hue, sum(c.saturation) / 2, sum(c.value) / 2)]
                          for c in spec.classes]
