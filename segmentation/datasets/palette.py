"""Deterministic colours for classes without a dataset colour (open vocabulary) and for group maps.

The reference shipped a fixed 72-row group palette file; this project generates its colours instead:
hues step by the golden ratio (neighbouring indices get very different hues), with saturation and value
cycling through a few levels so that colours far apart in the sequence stay distinguishable.
"""

import colorsys

import numpy as np

_GOLDEN = (5 ** 0.5 - 1) / 2  # 0.618...
_SATURATION = (0.95, 0.6, 0.8)
_VALUE = (0.95, 0.75, 0.55, 0.85)


def distinct_colors(n: int, offset: int = 0) -> np.ndarray:
    """Colours ``offset .. offset + n - 1`` of a fixed sequence, as uint8 RGB [n, 3]."""
    colors = []
    for i in range(offset, offset + n):
        hue = (0.1 + i * _GOLDEN) % 1.0
        rgb = colorsys.hsv_to_rgb(hue, _SATURATION[i % len(_SATURATION)], _VALUE[i % len(_VALUE)])
        colors.append([round(255 * c) for c in rgb])
    return np.asarray(colors, dtype=np.uint8).reshape(n, 3)
