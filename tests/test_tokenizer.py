"""Tokenizer and templates against the reference outputs in tests/golden/."""

import gzip
import hashlib
import json
from pathlib import Path

import pytest
import torch

from datasets import SimpleTokenizer, Tokenize, build_dataset_class_tokens, imagenet_classes, template_meta, tokenize
from datasets.tokenizer import EOT_ID, SOT_ID, default_bpe_path, default_tokenizer
from utils.errors import UserError

GOLDEN = Path(__file__).parent / 'golden'
CASES = json.loads((GOLDEN / 'tokenizer_cases.json').read_text(encoding='utf-8'))['cases']


@pytest.fixture(scope='module')
def golden():
    return torch.load(GOLDEN / 'tiny_golden.pt', weights_only=True)


def pad(ids: list[int]) -> list[int]:
    return ids + [0] * (77 - len(ids))


@pytest.mark.parametrize('case', CASES, ids=[c['kind'] for c in CASES])
def test_golden_case(case):
    assert default_tokenizer().encode(case['text']) == case['bpe_ids']
    out = tokenize(case['text'])
    assert out.shape == (77,) and out.dtype == torch.int64
    assert out.tolist() == case['ids']
    assert (case['num_tokens_with_specials'] > 77) == case['truncated']


@pytest.mark.parametrize('case', CASES, ids=[c['kind'] for c in CASES])
def test_no_truncate_flag(case):
    strict = Tokenize(default_tokenizer(), max_seq_len=77, truncate=False)
    if case['truncated']:
        with pytest.raises(UserError):
            strict(case['text'])
    else:
        assert strict(case['text']).tolist() == case['ids']


def test_truncation_keeps_eot():
    case = next(c for c in CASES if c['kind'] == 'overlong_sentence')
    ids = tokenize(case['text']).tolist()
    assert ids[-1] == EOT_ID and ids[:76] == [SOT_ID] + case['bpe_ids'][:75]


@pytest.mark.parametrize('text, ids', [
    ('a photo of a cat.', [49406, 320, 1125, 539, 320, 2368, 269, 49407]),
    ('a photo of a aeroplane.', [49406, 320, 1125, 539, 320, 27735, 3980, 269, 49407]),
    ('itap of a tench.', [49406, 529, 2728, 539, 320, 1149, 634, 269, 49407]),
    ('A Photo of  the DOG!!', [49406, 320, 1125, 539, 518, 1929, 748, 49407]),
    ("Geoffroy's spider monkey", [49406, 20629, 626, 344, 568, 7622, 9465, 49407]),
])
def test_appendix_b(text, ids):
    assert tokenize(text).tolist() == pad(ids)
    assert Tokenize(SimpleTokenizer())(text).tolist() == pad(ids)  # explicit instance, default bpe path


def test_shapes_and_dtype():
    assert tokenize('a cat').shape == (77,)
    batch = tokenize(['a cat', 'a dog', ''])
    assert batch.shape == (3, 77) and batch.dtype == torch.int64
    assert torch.equal(batch[0], tokenize('a cat'))
    assert tokenize(['a cat']).shape == (1, 77)
    assert tokenize(('a cat', 'a dog')).shape == (2, 77)
    assert tokenize('a cat', context_length=16).shape == (16,)


def test_short_context_truncation():
    ids = Tokenize(default_tokenizer(), max_seq_len=4)('a photo of a cat.').tolist()
    assert ids == [49406, 320, 1125, 49407]


def test_decode_roundtrip():
    tok = default_tokenizer()
    assert tok.decode(tok.encode('a photo of a cat.')) == 'a photo of a cat . '
    assert tok.decode(tok.encode('Crème brûlée 🐶')).strip() == 'crème brûlée 🐶'
    assert tok.decode([SOT_ID, EOT_ID]) == '<|startoftext|><|endoftext|>'


def test_vocab_layout():
    tok = default_tokenizer()
    assert len(tok.encoder) == 49408 and tok.encoder['!'] == 0 and tok.encoder['!</w>'] == 256
    assert tok.encoder['<|startoftext|>'] == SOT_ID and tok.encoder['<|endoftext|>'] == EOT_ID


def test_default_tokenizer_is_cached():
    assert default_tokenizer() is default_tokenizer()


def test_bpe_path_errors(tmp_path):
    with pytest.raises(UserError, match='not found'):
        SimpleTokenizer(bpe_path=tmp_path / 'missing.txt.gz')
    bad = tmp_path / 'bad.txt.gz'
    with gzip.open(bad, 'wt') as f:
        f.write('header\na b\n')
    with pytest.raises(UserError):
        SimpleTokenizer(bpe_path=bad)


def test_explicit_bpe_path():
    tok = SimpleTokenizer(bpe_path=str(default_bpe_path()))
    assert tok.encode('hello world') == default_tokenizer().encode('hello world')


def sha256_lines(items: list[str]) -> str:
    return hashlib.sha256('\n'.join(items).encode('utf-8')).hexdigest()


def test_template_sets():
    assert len(template_meta['full']) == 80
    assert sha256_lines(template_meta['full']) == '4f976686fb651bb5803d4689dcd849f75efe0ef19a3c801355bc9a6f03c8a5af'
    assert template_meta['subset'] == ['itap of a {}.', 'a bad photo of a {}.', 'a origami {}.',
                                       'a photo of the large {}.', 'a {} in a video game.', 'art of the {}.',
                                       'a photo of the small {}.']
    assert set(template_meta['subset']) <= set(template_meta['full'])
    assert template_meta['simple'] == ['a photo of a {}.'] and template_meta['identity'] == ['{}']


def test_imagenet_classes():
    assert len(imagenet_classes) == 1000
    assert sha256_lines(imagenet_classes) == '571ae1c583b4be7da87519494c52bf405a46af05d5815627c7a0dee997068b60'
    assert imagenet_classes.count('missile') == 2 and imagenet_classes.count('sunglasses') == 2
    assert 'kite (bird of prey)' in imagenet_classes and 'crane bird' in imagenet_classes


def test_build_dataset_class_tokens():
    names = ['cat', 'hot dog']
    tokens = build_dataset_class_tokens(Tokenize(default_tokenizer()), 'subset', names)
    assert tokens.shape == (2, 7, 77) and tokens.dtype == torch.int64
    assert torch.equal(tokens[1, 4], tokenize('a hot dog in a video game.'))
    assert build_dataset_class_tokens(tokenize, 'full', names).shape == (2, 80, 77)
    assert torch.equal(build_dataset_class_tokens(tokenize, 'identity', names)[:, 0], tokenize(names))
    with pytest.raises(UserError, match='identity'):
        build_dataset_class_tokens(tokenize, 'nope', names)


def test_tiny_golden_captions(golden):
    text = golden['text']
    assert torch.equal(Tokenize(default_tokenizer())(text['captions']), text['tokens'])
    multi = torch.stack([tokenize(captions) for captions in text['multi_label_captions']])
    assert torch.equal(multi, text['multi_label_tokens'])


def test_tiny_golden_class_tokens(golden):
    emb = golden['text_embedding']
    transform = Tokenize(default_tokenizer())
    assert template_meta[emb['subset_template']] == emb['subset_templates']
    voc = build_dataset_class_tokens(transform, emb['voc_template'], emb['voc_classnames'])
    assert torch.equal(voc, emb['voc_tokens'])
    subset = build_dataset_class_tokens(transform, emb['subset_template'], emb['subset_classnames'])
    assert torch.equal(subset, emb['subset_tokens'])


def test_repeated_texts_come_from_a_bounded_cache(monkeypatch):
    """Repeated texts are served from ``text_cache`` with the same ids, and the cache stops growing at its bound."""
    import datasets.tokenizer as tokenizer_module

    monkeypatch.setattr(tokenizer_module, 'ENCODE_CACHE', 2)
    tokenizer = SimpleTokenizer()
    texts = ['a photo of a star.', 'a sketch of a ring.', 'itap of a cross.']
    first = [tokenizer.encode(t) for t in texts]
    assert list(tokenizer.text_cache) == texts[:2]
    tokenizer.text_cache[texts[0]] = (1, 2, 3)  # a cached entry is what encode returns
    assert tokenizer.encode(texts[0]) == [1, 2, 3]
    assert [tokenizer.encode(t) for t in texts[1:]] == first[1:] == [default_tokenizer().encode(t) for t in texts[1:]]
