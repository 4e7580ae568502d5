"""Offline noun extraction and the multi-label text augmentation of GroupViT (the reference's
``WordAugTokenizeWrapper`` in datasets/builder.py, with nltk's tagger).

For the multi-label loss each caption becomes ``1 + M`` texts: the caption itself, then up to M prompts
built by putting words of the caption (nouns, and verbs, as in the reference's tag set) into randomly
chosen prompt templates; missing prompts are padded with the caption.

Nothing is downloaded, ever. Words come from ``nltk.word_tokenize(text, preserve_line=True)`` (needs no
punkt data) and are tagged with textblob's bundled ``PatternTagger``. nltk's perceptron tagger is used
instead only when its data (``averaged_perceptron_tagger_eng``) is already installed and the tagger is
'auto' or 'nltk'. The two taggers give Penn Treebank tags that differ on some words (PatternTagger is a
lexicon + rules tagger), so the chosen words can differ slightly from the reference's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

import numpy as np
import torch

from utils.errors import UserError

from .templates import template_meta

# The reference's "noun" tag set: nouns and verbs (NNPS is not in it; duplicates are kept).
WORD_TAGS = frozenset({"NN", "NNS", "NNP", "VBG", "VB", "VBD", "VBN", "VBP", "VBZ"})
TAGGERS = ("auto", "pattern", "nltk")
WORD_TYPES = ("noun", "noun_phrase")
WORD_CACHE = 2**15  # captions whose words are kept (a few MB per loader worker)

# Noun phrases: runs of adjectives/nouns ending in a noun. The reference's grammar lists {<NBAR>} before
# {<NBAR><IN><NBAR>}, so the second rule never fires; kept as it is.
_NOUN_PHRASE_GRAMMAR = r"""
    NBAR: {<NN.*|JJ>*<NN.*>}
    NP: {<NBAR>}
        {<NBAR><IN><NBAR>}
"""


@cache
def nltk_tagger_installed() -> bool:
    """True when nltk's perceptron tagger data is already on disk (never downloads it)."""
    import nltk

    try:
        nltk.data.find("taggers/averaged_perceptron_tagger_eng")
    except LookupError:
        return False
    return True


@cache
def _pattern_tagger():
    from textblob.en.taggers import PatternTagger

    return PatternTagger()


def resolve_tagger(tagger: str = "auto") -> str:
    """'auto' becomes 'nltk' when its data is installed, else 'pattern'; 'nltk' without data is an error."""
    if tagger not in TAGGERS:
        raise UserError(f"unknown POS tagger {tagger!r}; choose one of {', '.join(TAGGERS)}")
    if tagger == "auto":
        return "nltk" if nltk_tagger_installed() else "pattern"
    if tagger == "nltk" and not nltk_tagger_installed():
        raise UserError(
            "POS tagger 'nltk' needs nltk's 'averaged_perceptron_tagger_eng' data, which is not installed "
            "(install it yourself with nltk.download, or use the tagger 'pattern' / 'auto')"
        )
    return tagger


def pos_tag(text: str, tagger: str = "auto") -> list[tuple[str, str]]:
    """(word, Penn tag) pairs of a caption, offline."""
    import nltk

    tokens = nltk.word_tokenize(text, preserve_line=True)
    if not tokens:
        return []
    if resolve_tagger(tagger) == "nltk":
        return nltk.pos_tag(tokens)
    return [(word, tag) for word, tag in _pattern_tagger().tag(" ".join(tokens), tokenize=False)]


def extract_words(text: str, tagger: str = "auto") -> list[str]:
    """Words whose tag is in WORD_TAGS, in caption order, duplicates kept.

    "Two dogs are playing with a red ball on the beach near a man." ->
    ['dogs', 'are', 'playing', 'ball', 'beach', 'man'] (verbs are part of the reference's tag set).
    """
    return [word for word, tag in pos_tag(text, tagger) if tag in WORD_TAGS]


def extract_noun_phrases(text: str, tagger: str = "auto") -> list[str]:
    """Distinct noun phrases ('red ball', 'sandy beach'), in caption order."""
    import nltk

    tree = nltk.RegexpParser(_NOUN_PHRASE_GRAMMAR).parse(pos_tag(text, tagger))
    phrases: list[str] = []
    for subtree in tree.subtrees(lambda t: t.label() == "NP"):
        phrase = " ".join(word for word, _ in subtree.leaves())
        if phrase not in phrases:
            phrases.append(phrase)
    return phrases


class WordAugTokenizeWrapper:
    """Caption -> LongTensor [1 + max_word, 77]: the caption, then ``max_word`` word prompts (padded with it).

    Words are picked without replacement with ``np.random.choice`` (so the global numpy RNG, seeded per
    DataLoader worker, drives them), each into a template drawn from ``template_set`` ('full': the 80
    CLIP templates, as in the reference).
    """

    def __init__(self, tokenize: Callable[[Sequence[str]], torch.Tensor], max_word: int = 3,
                 template_set: str = "full", word_type: str = "noun", tagger: str = "auto"):
        if template_set not in template_meta:
            raise UserError(f"unknown template set {template_set!r}; valid: {', '.join(template_meta)}")
        if word_type not in WORD_TYPES:
            raise UserError(f"data.text_aug.word_type must be one of {', '.join(WORD_TYPES)}, not {word_type!r}")
        self.tokenize = tokenize
        self.max_word = max_word
        self.templates = template_meta[template_set]
        self.word_type = word_type
        self.tagger = resolve_tagger(tagger)
        self.word_cache: dict[str, tuple[str, ...]] = {}  # the words of the first WORD_CACHE captions seen

    def words(self, text: str) -> list[str]:
        words = self.word_cache.get(text)
        if words is None:  # tagging is the slowest text step; a caption can come again, within an epoch too
            words = tuple(extract_words(text, self.tagger) if self.word_type == "noun"
                          else extract_noun_phrases(text, self.tagger))
            if len(self.word_cache) < WORD_CACHE:
                self.word_cache[text] = words
        return list(words)

    def texts(self, text: str) -> list[str]:
        """[caption, prompt_1, ..., prompt_max_word] as strings."""
        words = self.words(text)
        prompts = []
        if words:
            chosen = np.random.choice(len(words), size=min(self.max_word, len(words)), replace=False)
            for i in chosen:
                template = self.templates[np.random.choice(len(self.templates))]
                prompts.append(template.format(words[i]))
        prompts += [text] * (self.max_word - len(prompts))
        return [text, *prompts]

    def __call__(self, text: str) -> torch.Tensor:
        return self.tokenize(self.texts(text))  # [1 + max_word, 77]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(max_word={self.max_word}, templates={len(self.templates)}, "
                f"word_type={self.word_type!r}, tagger={self.tagger!r})")
