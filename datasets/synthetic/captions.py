"""Captions that read like real ones, and say only what the scene shows.

Several templates, colour, size and texture adjectives, counts ("two stars"), spatial relations from the object
positions (left of, above, next to, ...), synonyms ("ball" for circle), and sometimes a whole class is left out
(at least one is always named). Only objects that are mostly visible are named. The grammar's probabilities are
the spec's ``CaptionGrammar``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

import numpy as np

from .render import SceneObject
from .spec import ObjectClass, WorldSpec

_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
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


def _single(o: SceneObject, noun: str, spec: WorldSpec, rng: np.random.Generator) -> str:
    """'a big striped red ball'."""
    g = spec.captions
    words = [o.colour] if rng.random() < g.colour_word else []
    if o.texture != "plain" and rng.random() < g.texture_word:
        words.insert(0, o.texture)
    if rng.random() < g.size_word and (o.extent > 0.42 or o.extent < 0.3):
        words.insert(0, str(rng.choice(_SIZES["big" if o.extent > 0.42 else "small"])))
    return _with_article(" ".join([*words, noun]))


def _phrase(group: Sequence[SceneObject], spec: WorldSpec, rng: np.random.Generator) -> str:
    """A noun phrase for the objects of one class, e.g. 'a big striped red ball', 'two stars' or (split counts)
    'a red star and a blue star'."""
    g = spec.captions
    c: ObjectClass = spec.classes[group[0].label - 1]
    noun = str(rng.choice(c.synonyms)) if c.synonyms and rng.random() < g.synonym else c.name
    if len(group) == 1:
        return _single(group[0], noun, spec, rng)
    colours = {o.colour for o in group}
    if len(colours) > 1 and rng.random() < g.split_counts:
        return _join([_single(o, noun, spec, rng) for o in group])
    words = [group[0].colour] if len(colours) == 1 and rng.random() < g.colour_word else []
    return " ".join([_NUMBERS[len(group)], *words, _plural(noun)])


def caption_for(objects: Sequence[SceneObject], spec: WorldSpec, rng: np.random.Generator) -> str:
    """A caption for a scene of at least one object. It names only classes of nameable objects (at least one,
    counts and relations from the scene); one class of a multi-class scene may be left out."""
    g = spec.captions
    shown = nameable(objects)
    groups: dict[int, list[SceneObject]] = {}
    for o in shown:
        groups.setdefault(o.label, []).append(o)
    labels = [int(v) for v in rng.permutation(sorted(groups))]
    if len(labels) > 1 and rng.random() < g.omit_class:
        labels.pop()
    phrases = [_phrase(groups[label], spec, rng) for label in labels]
    singles = [label for label in labels if len(groups[label]) == 1]
    if len(singles) >= 2 and rng.random() < g.relation:  # "A <relation> B", then the others
        a, b = groups[singles[0]][0], groups[singles[1]][0]
        rel = str(rng.choice(_RELATIONS[relation(a, b)]))
        pa, pb = phrases[labels.index(a.label)], phrases[labels.index(b.label)]
        rest = [p for p, label in zip(phrases, labels, strict=True) if label not in (a.label, b.label)]
        objs = f"{pa} {rel} {pb}" + (f" and {_join(rest)}" if rest else "")
    else:
        objs = _join(phrases)
    be = "is" if phrases[0].startswith(("a ", "an ")) and " and " not in phrases[0] else "are"
    text = str(rng.choice(_LIST_TEMPLATES)).format(objs=objs, be=be)
    if rng.random() < g.period:
        text += "."
    return text[0].upper() + text[1:] if rng.random() < g.capital else text


@cache
def _class_words(classes: tuple[ObjectClass, ...]) -> dict[str, int]:
    return {w: i + 1 for i, c in enumerate(classes) for n in (c.name, *c.synonyms) for w in (n, _plural(n))}


def classes_in_caption(caption: str, spec: WorldSpec) -> set[int]:
    """The class labels (1..K) a caption names, synonyms and plurals included."""
    words = _class_words(spec.classes)
    return {words[w] for w in re.findall(r"[a-z]+", caption.lower()) if w in words}
