"""A synthetic image-caption world small enough to train GroupViT on a CPU in minutes (seeded, deterministic).

Scenes: a few objects of K shape classes on a cluttered background, described by captions that name only what is
visible. One frozen ``WorldSpec`` (spec.py) describes a world; ``render`` draws a scene, ``captions`` describes it,
``writer`` writes training shards (``jpg`` + ``txt``, the layout of the real caption data), a Pascal VOC style
segmentation set and ImageNet-style classification shards. (The best mIoU a patch-grid model can reach on a
world's masks: ``segmentation.evaluation.diagnostics.patch_grid_bound``.)
"""

from .captions import caption_for, classes_in_caption, nameable, relation
from .render import SceneObject, palette, render_scene
from .spec import (
    CLASSES,
    DEFAULT_WORLD,
    SPLITS,
    TEXTURES,
    WORLDS,
    CaptionGrammar,
    ObjectClass,
    WorldSpec,
    sample_rng,
)
from .writer import write_cls_set, write_seg_set, write_train_shards, write_world

__all__ = [
    "CLASSES", "DEFAULT_WORLD", "SPLITS", "TEXTURES", "WORLDS", "CaptionGrammar", "ObjectClass", "SceneObject",
    "WorldSpec", "caption_for", "classes_in_caption", "nameable", "palette", "relation", "render_scene",
    "sample_rng", "write_cls_set", "write_seg_set", "write_train_shards", "write_world",
]
