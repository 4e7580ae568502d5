"""Data pipeline: tokenizer, prompt templates (more exports are added per module below)."""

from .templates import build_dataset_class_tokens, imagenet_classes, template_meta
from .tokenizer import SimpleTokenizer, Tokenize, tokenize

__all__ = [
    # tokenizer
    'SimpleTokenizer',
    'Tokenize',
    'tokenize',
    # templates
    'build_dataset_class_tokens',
    'imagenet_classes',
    'template_meta',
]
