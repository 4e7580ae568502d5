"""Open vocabulary: extra class names for the demo, on top of a dataset's classes or alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from utils.errors import UserError

from .palette import distinct_colors

BACKGROUND = "background"


def parse_vocab(items: Sequence[str]) -> list[str]:
    """Class names from ``--vocab`` values (each may hold several, comma-separated); blanks and repeats
    (case-insensitive) dropped, order kept."""
    names: list[str] = []
    for item in items:
        for name in (" ".join(part.split()) for part in item.split(",")):
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
        classes, palette = [BACKGROUND], palette[:1]
    known = {c.lower() for c in classes}
    new = [n for n in names if n.lower() not in known]
    return {"classes": classes + new, "palette": palette + distinct_colors(len(new), offset=len(classes)).tolist()}
