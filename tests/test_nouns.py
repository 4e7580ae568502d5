"""Offline noun extraction and the multi-label text wrapper (the reference's ``WordAugTokenizeWrapper``)."""

import socket

import numpy as np
import pytest
import torch

from datasets import Tokenize, WordAugTokenizeWrapper, extract_words, template_meta
from datasets.nouns import WORD_TAGS, extract_noun_phrases, pos_tag, resolve_tagger
from utils.errors import UserError


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any download attempt fails the test: sockets cannot connect and nltk.download raises."""
    import nltk

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(nltk, "download", refuse)


@pytest.mark.parametrize("caption, words", [
    ("Two dogs are playing with a red ball on the beach near a man.",
     ["dogs", "are", "playing", "ball", "beach", "man"]),
    ("A cat sleeps on a wooden table.", ["cat", "sleeps", "table"]),
    ("a bowl of fresh fruit", ["bowl", "fruit"]),
    ("The dog and the dog.", ["dog", "dog"]),  # duplicates are kept, as in the reference
    ("", []),
    ("!!! ...", []),
])
def test_extract_words_examples(caption, words):
    assert extract_words(caption, tagger="pattern") == words


def test_tag_set_is_the_references():
    assert WORD_TAGS == {"NN", "NNS", "NNP", "VBG", "VB", "VBD", "VBN", "VBP", "VBZ"}
    tags = dict(pos_tag("Two dogs are playing with a red ball.", tagger="pattern"))
    assert tags["red"] == "JJ" and tags["with"] == "IN" and tags["dogs"] == "NNS"


def test_noun_phrases():
    phrases = extract_noun_phrases("A red ball on the sandy beach near a red ball.", tagger="pattern")
    assert phrases == ["red ball", "sandy beach"]


def test_tagger_choice_never_downloads():
    from datasets.nouns import nltk_tagger_installed

    expected = "nltk" if nltk_tagger_installed() else "pattern"
    assert resolve_tagger("auto") == expected
    assert resolve_tagger("pattern") == "pattern"
    if not nltk_tagger_installed():
        with pytest.raises(UserError, match="averaged_perceptron_tagger_eng"):
            resolve_tagger("nltk")
    with pytest.raises(UserError, match="unknown POS tagger"):
        resolve_tagger("spacy")


def test_wrapper_texts_and_tensor_shape():
    wrapper = WordAugTokenizeWrapper(Tokenize(), max_word=3, tagger="pattern")
    caption = "Two dogs are playing with a red ball on the beach near a man."
    np.random.seed(0)
    texts = wrapper.texts(caption)
    assert len(texts) == 4 and texts[0] == caption
    words = set(extract_words(caption, tagger="pattern"))
    filled = []
    for prompt in texts[1:]:  # each prompt is one of the 80 templates around one caption word
        matches = [(t, w) for t in template_meta["full"] for w in words if t.format(w) == prompt]
        assert matches, prompt
        filled.append(matches[0][1])
    assert len(set(filled)) == 3  # words are drawn without replacement

    tokens = wrapper(caption)
    assert tokens.shape == (4, 77) and tokens.dtype == torch.long
    np.random.seed(0)
    assert torch.equal(wrapper(caption), Tokenize()(texts))  # seeded via numpy


def test_wrapper_pads_with_the_caption():
    wrapper = WordAugTokenizeWrapper(Tokenize(), max_word=3, tagger="pattern")
    assert wrapper.texts("of the") == ["of the"] * 4  # no word: three copies of the caption
    texts = wrapper.texts("a bowl of fresh fruit")  # two words: one copy
    assert texts[0] == texts[3] == "a bowl of fresh fruit" and "a bowl of fresh fruit" not in texts[1:3]
    assert wrapper("of the").shape == (4, 77)


def test_wrapper_rejects_bad_settings():
    with pytest.raises(UserError, match="word_type"):
        WordAugTokenizeWrapper(Tokenize(), word_type="verb")
    with pytest.raises(UserError, match="template set"):
        WordAugTokenizeWrapper(Tokenize(), template_set="nope")


def test_text_transform_from_config():
    from omegaconf import OmegaConf

    from datasets import build_text_transform

    text_aug = OmegaConf.create({"max_seq_len": 77, "multi_label": 3, "word_type": "noun", "tagger": "pattern"})
    assert build_text_transform(True, text_aug)("A cat sleeps on a table.").shape == (4, 77)
    assert build_text_transform(False, text_aug)("A cat sleeps on a table.").shape == (77,)
    text_aug.multi_label = 0
    assert build_text_transform(True, text_aug)("A cat.").shape == (77,)


def test_words_of_a_repeated_caption_come_from_a_bounded_cache(monkeypatch):
    import datasets.nouns as nouns

    monkeypatch.setattr(nouns, "WORD_CACHE", 1)
    wrapper = WordAugTokenizeWrapper(Tokenize(), max_word=2)
    assert wrapper.words("A cat sleeps on a wooden table.") == ["cat", "sleeps", "table"]
    assert wrapper.words("a bowl of fresh fruit") == ["bowl", "fruit"]
    assert list(wrapper.word_cache) == ["A cat sleeps on a wooden table."]
    wrapper.word_cache["A cat sleeps on a wooden table."] = ("dog",)  # a cached entry is what words returns
    assert wrapper.words("A cat sleeps on a wooden table.") == ["dog"]
