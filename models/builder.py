"""``build_model(cfg.model)``: build a model from its config section by ``type`` name."""

import inspect
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from utils.errors import UserError

from .group_vit import GroupViT
from .multi_label_contrastive import MultiLabelContrastive
from .transformer import TextTransformer

MODELS: dict[str, type[nn.Module]] = {
    "MultiLabelContrastive": MultiLabelContrastive,
    "GroupViT": GroupViT,
    "TextTransformer": TextTransformer,
}


def build_model(cfg: Mapping[str, Any] | DictConfig, _where: str = "model") -> nn.Module:
    """Build ``cfg['type']`` with the other keys as arguments; nested sections with a ``type`` are built first.

    Interpolations are resolved (so ``multi_label: ${data.text_aug.multi_label}`` must be resolvable).
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    kwargs = dict(cfg)
    name = kwargs.pop("type", None)
    if name not in MODELS:
        raise UserError(f"{_where}.type: unknown model type {name!r} (known: {', '.join(MODELS)})")
    cls = MODELS[name]
    for key, value in kwargs.items():
        if isinstance(value, Mapping) and "type" in value:
            kwargs[key] = build_model(value, f"{_where}.{key}")
    accepted = inspect.signature(cls.__init__).parameters
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise UserError(f"{_where}: {name} has no argument(s) {', '.join(unknown)}")
    return cls(**kwargs)
