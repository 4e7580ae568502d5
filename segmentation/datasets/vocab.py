"""Open vocabulary for the front ends: the preset datasets, class names parsed from text, and the classes a
vocabulary resolves to (a dataset's classes plus new names, or background plus the names).

Presets with a background class (VOC, Context, COCO-Object) label it by the threshold rule; the others (ADE20K,
COCO-Stuff, Cityscapes) give every pixel one of their classes."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmseg.datasets import CityscapesDataset, COCOStuffDataset

from utils.errors import UserError

from .ade20k import GroupViTADE20KDataset
from .coco_object import COCOObjectDataset
from .palette import distinct_colors
from .pascal_context import GroupViTPascalContextDataset
from .pascal_voc import GroupViTPascalVOCDataset

BACKGROUND = "background"
_DATASET_CFGS = Path(__file__).resolve().parents[1] / "configs" / "_base_" / "datasets"
VOCABULARY_PRESETS = {  # the demos' --dataset choice: (dataset config, class names and colours)
    "voc": (_DATASET_CFGS / "pascal_voc12.py", GroupViTPascalVOCDataset.METAINFO),
    "context": (_DATASET_CFGS / "pascal_context.py", GroupViTPascalContextDataset.METAINFO),
    "coco": (_DATASET_CFGS / "coco.py", COCOObjectDataset.METAINFO),
    "ade20k": (_DATASET_CFGS / "ade20k.py", GroupViTADE20KDataset.METAINFO),
    "coco_stuff": (_DATASET_CFGS / "coco_stuff.py", COCOStuffDataset.METAINFO),
    "cityscapes": (_DATASET_CFGS / "cityscapes.py", CityscapesDataset.METAINFO),
}


def prompted_classes(meta: Mapping[str, Any]) -> list[str]:
    """A dataset's class names without its background class (the threshold rule's, never prompted)."""
    classes = list(meta["classes"])
    return classes[1:] if classes and classes[0] == BACKGROUND else classes


def parse_vocab(items: Sequence[str]) -> list[str]:
    """Class names from ``--vocab`` values or the web demo's text box (each may hold several, separated by commas
    or line breaks); blanks and repeats (case-insensitive) dropped, order kept."""
    names: list[str] = []
    for item in items:
        for name in (" ".join(part.split()) for part in re.split(r"[,\n]", item)):
            if name and name.lower() not in {n.lower() for n in names}:
                names.append(name)
    return names


def with_vocab(meta: Mapping[str, Any], vocab: Sequence[str], vocab_only: bool = False) -> dict[str, list]:
    """``{'classes', 'palette'}``: the dataset's classes plus the new names of ``vocab``, or with ``vocab_only``
    background plus ``vocab``. New classes get generated colours."""
    names = [n for n in parse_vocab(vocab) if n.lower() != BACKGROUND]
    if not names:
        raise UserError("empty vocabulary: give class names with --vocab, e.g. --vocab cat 'traffic cone'")
    classes, palette = list(meta["classes"]), [list(c) for c in meta["palette"]]
    if vocab_only:
        classes, palette = [BACKGROUND], palette[:1] if classes[0] == BACKGROUND else [[0, 0, 0]]
    known = {c.lower() for c in classes}
    new = [n for n in names if n.lower() not in known]
    return {"classes": classes + new, "palette": palette + distinct_colors(len(new), offset=len(classes)).tolist()}


def preset_vocabulary(dataset: str) -> str:
    """A preset's class names (background excepted), comma-separated."""
    return ", ".join(prompted_classes(VOCABULARY_PRESETS[dataset][1]))


def resolve_vocabulary(text: str, presets: Mapping[str, tuple[Path, Mapping[str, Any]]] = VOCABULARY_PRESETS
                       ) -> tuple[str, dict[str, list]]:
    """The preset whose config (test pipeline, background threshold) and colours to use, and the classes of the
    vocabulary ``text`` (names separated by commas or line breaks).

    A vocabulary holding the whole class list of one of ``presets`` keeps that dataset's order and colours (the
    largest such preset wins); any other is background plus the names, with the VOC config and generated colours.
    """
    names = [n for n in parse_vocab([text or ""]) if n.lower() != BACKGROUND]
    if not names:
        raise UserError("the vocabulary is empty: type class names separated by commas or one per line (e.g. "
                        "'cup, saucer, spoon') or pick a preset")
    given = {n.lower() for n in names}
    for dataset, (_, meta) in sorted(presets.items(), key=lambda item: -len(item[1][1]["classes"])):
        if {c.lower() for c in prompted_classes(meta)} <= given:
            return dataset, with_vocab(meta, names)
    return "voc", with_vocab(VOCABULARY_PRESETS["voc"][1], names, vocab_only=True)
