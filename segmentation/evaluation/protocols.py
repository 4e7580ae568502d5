"""Evaluation protocols: the test resolution, sliding windows and prompt templates a dataset is evaluated with.

- ``groupvit`` (the default): the dataset config as it is, i.e. the reference's settings (short side 448, sliding
  448x448 windows with stride 224) and the ``evaluate.seg.template`` prompts ('simple': "a photo of a {}.").
- ``sclip``: the protocol of SCLIP's repository (Wang et al., ECCV 2024; methods built on its evaluation code, e.g.
  ClearCLIP and NACLIP, keep it): short side 336 (448 for COCO-Stuff and 560 for Cityscapes, as in SCLIP's dataset
  configs), sliding 224x224 windows with stride 112,
  the 80 CLIP ImageNet templates ('full'). The segmentor itself (GroupViT's group-to-class rule and background
  threshold) is the same under both.

``evaluate.seg.short_side`` sets the short side under either protocol (the long side stays capped at 2048).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mmengine.config import Config

from utils.errors import UserError


@dataclass(frozen=True)
class Protocol:
    """What a protocol changes in a dataset config; None keeps the config's (or ``evaluate.seg.template``)."""

    name: str
    short_side: int | None = None
    crop: int | None = None
    stride: int | None = None
    template: str | None = None
    short_side_of: Mapping[str, int] = field(default_factory=dict)  # dataset config name -> its short side


PROTOCOLS = {
    "groupvit": Protocol("groupvit"),
    "sclip": Protocol("sclip", short_side=336, crop=224, stride=112, template="full",
                      short_side_of={"coco_stuff": 448, "cityscapes": 560}),
}
LONG_SIDE_CAP = 2048  # Resize(scale=(2048, short side), keep_ratio=True): the short side, unless the long side passes


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise UserError(f"unknown evaluate.seg.protocol {name!r}; valid: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def _set_short_side(pipeline: list, short_side: int, where: str) -> None:
    resizes = [step for step in pipeline if step["type"] == "Resize"]
    if len(resizes) != 1:
        raise UserError(f"cannot set the short side: {where} has {len(resizes)} Resize steps, not one")
    resizes[0]["scale"] = (LONG_SIDE_CAP, short_side)


def apply_protocol(seg_cfg: Config, protocol: str = "groupvit", short_side: int | None = None,
                   template: str = "simple") -> tuple[Config, str]:
    """The dataset config under ``protocol`` (a copy when anything changes) and the template set to prompt with.

    ``short_side`` (if given) overrides the protocol's; both the config's ``test_pipeline`` and its dataset's
    pipeline get it. ``template`` is used unless the protocol fixes one.
    """
    spec = get_protocol(protocol)
    if short_side is not None and (isinstance(short_side, bool) or not isinstance(short_side, int) or short_side < 32):
        raise UserError(f"evaluate.seg.short_side must be an integer of at least 32 pixels, not {short_side!r}")
    dataset = Path(seg_cfg.filename).stem if seg_cfg.filename else ""
    side = short_side or spec.short_side_of.get(dataset, spec.short_side)
    if side is None and spec.crop is None:
        return seg_cfg, spec.template or template
    seg_cfg = copy.deepcopy(seg_cfg)
    if side is not None:
        _set_short_side(seg_cfg.test_pipeline, side, f"{seg_cfg.filename}'s test_pipeline")
        _set_short_side(seg_cfg.test_dataloader.dataset.pipeline, side, f"{seg_cfg.filename}'s dataset pipeline")
    if spec.crop is not None:
        seg_cfg.merge_from_dict({"test_cfg.mode": "slide", "test_cfg.crop_size": (spec.crop, spec.crop),
                                 "test_cfg.stride": (spec.stride, spec.stride)})
    return seg_cfg, spec.template or template
