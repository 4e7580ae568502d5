"""The GroupViT model library: image encoder, text encoder, top-level model and its factory."""

from .builder import MODELS, build_model
from .group_vit import GroupViT
from .multi_label_contrastive import MultiLabelContrastive, ProjectMLP
from .transformer import TextTransformer

__all__ = ["MODELS", "build_model", "GroupViT", "MultiLabelContrastive", "ProjectMLP", "TextTransformer"]
