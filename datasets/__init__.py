"""Data pipeline: tokenizer, prompt templates, noun prompts, webdataset loaders and transforms.

The loaders (``datasets.builder``: webdataset, timm, torchvision) are imported on first use, so importing
this package for the tokenizer stays light.
"""

import importlib

from .nouns import WordAugTokenizeWrapper, extract_words
from .templates import build_dataset_class_tokens, imagenet_classes, template_meta
from .tokenizer import SimpleTokenizer, Tokenize, tokenize

_BUILDER = ('build_img_transform', 'build_text_transform', 'build_train_loader', 'build_val_loader')

__all__ = [
    # tokenizer
    'SimpleTokenizer',
    'Tokenize',
    'tokenize',
    # templates
    'build_dataset_class_tokens',
    'imagenet_classes',
    'template_meta',
    # nouns (multi-label text augmentation)
    'WordAugTokenizeWrapper',
    'extract_words',
    # builder (loaded lazily)
    *_BUILDER,
]


def __getattr__(name: str):
    if name in _BUILDER:
        return getattr(importlib.import_module('.builder', __name__), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
