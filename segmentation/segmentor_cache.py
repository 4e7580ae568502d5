"""Segmentors for a front end that takes a vocabulary with every request (the web demo).

``SegmentorCache.get(vocabulary, bg_thresh)`` resolves the vocabulary (``datasets.vocab.resolve_vocabulary``, with
the presets plus any ``extra_presets``, e.g. the synthetic world of a quickstart checkpoint), builds the segmentor
once per (preset, classes, background threshold) on the one shared model, and keeps the last few. A cached
segmentor is never changed afterwards, so a request cannot alter what another one holds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .datasets.vocab import VOCABULARY_PRESETS, resolve_vocabulary
from .evaluation.builder import build_segmentor
from .evaluation.group_vit_seg import GroupViTSegInference

ExtraPreset = tuple[Path, Mapping[str, Any], Sequence[str]]  # dataset config, classes and palette, its own opts


class SegmentorCache:
    """The segmentors of the last ``size`` requests' (preset, classes, threshold), whole-image mode."""

    def __init__(self, model: torch.nn.Module, seg_opts: Sequence[str] = (), template: str = "simple",
                 size: int = 4, extra_presets: Mapping[str, ExtraPreset] | None = None):
        """``extra_presets``: name -> (dataset config, classes and palette, that config's own ``key=value``
        overrides), beside ``VOCABULARY_PRESETS``."""
        self.model, self.seg_opts, self.template, self.size = model, list(seg_opts), template, size
        extra_presets = extra_presets or {}
        self.presets = {**VOCABULARY_PRESETS, **{name: (cfg, meta) for name, (cfg, meta, _) in extra_presets.items()}}
        self.preset_opts = {name: list(opts) for name, (_, _, opts) in extra_presets.items()}
        self._segmentors: OrderedDict[tuple, GroupViTSegInference] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, vocabulary: str, bg_thresh: float | None = None) -> GroupViTSegInference:
        """The segmentor for ``vocabulary`` (names separated by commas or line breaks); ``bg_thresh`` None: the
        preset config's."""
        dataset, meta = resolve_vocabulary(vocabulary, self.presets)
        key = (dataset, tuple(meta["classes"]), bg_thresh)
        with self._lock:
            seg_model = self._segmentors.pop(key, None)
            if seg_model is None:
                opts = ["test_cfg.mode=whole", *self.preset_opts.get(dataset, []), *self.seg_opts]
                seg_model = build_segmentor(self.model, meta, self.presets[dataset][0], opts=opts,
                                            template=self.template)
                if bg_thresh is not None:
                    seg_model.bg_thresh = float(bg_thresh)  # before anyone holds it
            self._segmentors[key] = seg_model  # the most recent last
            while len(self._segmentors) > self.size:
                self._segmentors.popitem(last=False)
            return seg_model
