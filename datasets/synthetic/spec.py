"""What a synthetic world is: one frozen ``WorldSpec`` (image size, objects, classes, colours, caption grammar).

Variants of the world are spec values (``dataclasses.replace``), never patched functions. ``WORLDS`` names the
ones the project uses; ``WORLDS[DEFAULT_WORLD]`` is the world the quickstart trains on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ObjectClass:
    name: str                        # the class name (zero-shot prompts use it); also picks the shape drawn
    synonyms: tuple[str, ...]        # other nouns captions may use
    colour: str                      # the colour word of its signature colour
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
# Four more classes for the worlds with 12 (fewer copies of each noun prompt among a batch's negatives); hues
# between the eight above; olive and brown are told from yellow and orange by their brightness. Colour words
# that the noun tagger does not take for nouns (not "lime"), so that no prompt names a colour.
MORE_CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("hexagon", (), "olive", 75, (0.7, 1.0), (0.5, 0.65)),
    ObjectClass("moon", ("crescent",), "azure", 200, (0.55, 0.85), (0.85, 1.0)),
    ObjectClass("arrow", (), "brown", 25, (0.6, 0.85), (0.35, 0.5)),
    ObjectClass("pentagon", (), "magenta", 300, (0.7, 1.0), (0.6, 0.9)),
)
TEXTURES = ("plain", "striped", "dotted")
SPLITS = {"train": 0, "seg": 1, "cls": 2}


@dataclass(frozen=True)
class CaptionGrammar:
    """Probabilities of the caption's optional parts."""
    colour_word: float = 0.6      # a phrase names the object's colour
    synonym: float = 0.25         # a synonym instead of the class name (when the class has one)
    texture_word: float = 0.3     # 'striped' / 'dotted' for a single textured object
    size_word: float = 0.3        # 'big' / 'small' for a single object of extreme size
    omit_class: float = 0.3       # one class of a multi-class scene is left out
    relation: float = 0.5         # "A <relation> B" when two classes appear once each
    split_counts: float = 0.0     # same-class objects of different colours listed one by one, not "two stars"
    period: float = 0.7
    capital: float = 0.3


@dataclass(frozen=True)
class WorldSpec:
    """Everything that decides a world's images, masks and captions (with the seed)."""
    image_size: int = 64
    num_objects: tuple[int, int] = (2, 4)         # inclusive range of objects per training / seg image
    scale: tuple[float, float] = (0.25, 0.5)      # an object's bounding size as a fraction of the image side
    crowded_from: int = 4                         # scenes with this many objects or more draw them 15 % smaller
    cls_scale: tuple[float, float] = (0.45, 0.75)  # the classification set: one object of this size
    classes: tuple[ObjectClass, ...] = CLASSES
    colour_tied_to_class: bool = True             # False: each object takes one of the classes' colours, distinct
    #                                               within an image, independent of its class (the class = shape)
    texture_probs: tuple[float, float, float] = (0.5, 0.25, 0.25)  # of TEXTURES
    background: str = "cluttered"                 # 'cluttered' (patterns and clutter) or 'plain' (one muted colour)
    captions: CaptionGrammar = field(default_factory=CaptionGrammar)

    def __post_init__(self) -> None:
        if self.background not in ("cluttered", "plain"):
            raise ValueError(f"background must be 'cluttered' or 'plain', not {self.background!r}")
        if not 1 <= self.num_objects[0] <= self.num_objects[1]:
            raise ValueError(f"num_objects must be an increasing range from 1, not {self.num_objects}")
        if not self.colour_tied_to_class and self.num_objects[1] > len(self.classes):
            raise ValueError("untied colours are distinct within an image: at most one object per colour")

    @property
    def class_names(self) -> tuple[str, ...]:
        """Mask value i <-> class_names[i]; 0 is background."""
        return ("background", *(c.name for c in self.classes))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# The worlds the project uses, by name (tools/make_synthetic_data.py --world, tools/quickstart.py --world).
WORLDS: dict[str, WorldSpec] = {
    "v1": WorldSpec(),  # the first quickstart world: 64 px, 2-4 objects at 0.25-0.5, colour tied to class
    "v2": WorldSpec(num_objects=(1, 3), scale=(0.35, 0.6)),  # fewer, larger objects (patch-grid bound 70 at 64 px)
    "v3": WorldSpec(image_size=80, num_objects=(1, 3), scale=(0.35, 0.6)),  # the quickstart's: v2 at 80 px (bound 75)
    "v3_12_classes": WorldSpec(image_size=80, num_objects=(1, 3), scale=(0.35, 0.6), classes=CLASSES + MORE_CLASSES),
    "v3_untied_colour": WorldSpec(image_size=80, num_objects=(1, 3), scale=(0.35, 0.6), colour_tied_to_class=False),
}
DEFAULT_WORLD = "v3"


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of ``split`` ('train', 'seg' or 'cls')."""
    return np.random.default_rng([seed, SPLITS[split], index])
