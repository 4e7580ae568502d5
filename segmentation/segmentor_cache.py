"""Segmentors for a front end that takes a vocabulary with every request (the web demo).

``SegmentorCache.get(vocabulary, bg_thresh)`` resolves the vocabulary (``datasets.vocab.resolve_vocabulary``),
builds the segmentor once per (preset, classes, background threshold) on the one shared model, and keeps the
last few. A cached segmentor is never changed afterwards, so a request cannot alter what another one holds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import torch

from .datasets.vocab import VOCABULARY_PRESETS, resolve_vocabulary
from .evaluation.builder import build_segmentor
from .evaluation.group_vit_seg import GroupViTSegInference


class SegmentorCache:
    """The segmentors of the last ``size`` requests' (preset, classes, threshold), whole-image mode."""

    def __init__(self, model: torch.nn.Module, seg_opts: Sequence[str] = (), template: str = "simple",
                 size: int = 4):
        self.model, self.seg_opts, self.template, self.size = model, list(seg_opts), template, size
        self._segmentors: OrderedDict[tuple, GroupViTSegInference] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, vocabulary: str, bg_thresh: float | None = None) -> GroupViTSegInference:
        """The segmentor for the comma-separated ``vocabulary``; ``bg_thresh`` None: the preset config's."""
        dataset, meta = resolve_vocabulary(vocabulary)
        key = (dataset, tuple(meta["classes"]), bg_thresh)
        with self._lock:
            seg_model = self._segmentors.pop(key, None)
            if seg_model is None:
                seg_model = build_segmentor(self.model, meta, VOCABULARY_PRESETS[dataset][0],
                                            opts=["test_cfg.mode=whole", *self.seg_opts], template=self.template)
                if bg_thresh is not None:
                    seg_model.bg_thresh = float(bg_thresh)  # before anyone holds it
            self._segmentors[key] = seg_model  # the most recent last
            while len(self._segmentors) > self.size:
                self._segmentors.popitem(last=False)
            return seg_model
