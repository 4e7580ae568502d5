"""CLIP byte-level BPE tokenizer, written from scratch, with the GroupViT ``Tokenize`` transform.

Pipeline for one string: clean (ftfy, HTML unescape twice, whitespace collapse, lowercase), split with
the CLIP pre-tokeniser regex, map every UTF-8 byte to a printable unicode character, run greedy BPE
merges, then look the pieces up in the 49,408-entry vocabulary. ``Tokenize`` wraps the ids as
``[49406] + ids + [49407]`` zero-padded to 77 (cut to 77 with a final 49407 when longer).

The merges file ``bpe_simple_vocab_16e6.txt.gz`` is read from the installed mmsegmentation package
(found without importing it) or from an explicit path. Nothing is ever downloaded.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import ftfy
import regex as re
import torch

from utils.errors import UserError

SOT_TEXT = '<|startoftext|>'
EOT_TEXT = '<|endoftext|>'
SOT_ID = 49406
EOT_ID = 49407
ENCODE_CACHE = 2**15  # texts whose ids are kept (a few MB per loader worker)
CONTEXT_LENGTH = 77
NUM_MERGES = 49152 - 256 - 2  # merge lines used from the file (the header line is skipped)

# specials | contractions | letter runs | single digits | runs of other non-space characters
_PRETOKENIZE = re.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+""",
    re.IGNORECASE,
)
_WHITESPACE = re.compile(r'\s+')


def default_bpe_path() -> Path:
    """Path of the merges file shipped inside mmsegmentation (``mmseg/utils/``), located without importing mmseg."""
    spec = importlib.util.find_spec('mmseg')
    if spec is None or spec.origin is None:
        raise UserError('CLIP BPE merges not found: mmsegmentation is not installed; pass bpe_path explicitly')
    return Path(spec.origin).parent / 'utils' / 'bpe_simple_vocab_16e6.txt.gz'


@cache
def bytes_to_unicode() -> dict[int, str]:
    """Byte -> printable character: the 188 printable bytes map to themselves, the rest to chr(256 + n)."""
    printable = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1), *range(ord('®'), ord('ÿ') + 1)]
    table = {b: chr(b) for b in printable}
    others = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + n) for n, b in enumerate(others)})
    return table  # insertion order (printable bytes first) is the vocabulary order


def clean_text(text: str) -> str:
    """ftfy.fix_text, html.unescape twice, strip, collapse whitespace, lowercase (the reference order)."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(' ', text).strip().lower()


class SimpleTokenizer:
    """CLIP byte-level BPE: ``encode(text)`` gives BPE ids (no specials), ``decode(ids)`` gives text back."""

    def __init__(self, bpe_path: str | Path | None = None):
        path = Path(bpe_path) if bpe_path is not None else default_bpe_path()
        if not path.is_file():
            raise UserError(f'CLIP BPE merges file not found: {path}')
        with gzip.open(path, 'rt', encoding='utf-8') as f:
            lines = f.read().split('\n')[1:NUM_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
            raise UserError(f'not a CLIP BPE merges file (expected {NUM_MERGES} merge pairs): {path}')

        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {c: b for b, c in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + '</w>' for s in symbols] + [a + b for a, b in merges] + [SOT_TEXT, EOT_TEXT]
        self.encoder: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        self.decoder: dict[int, str] = dict(enumerate(vocab))
        self.bpe_ranks: dict[tuple[str, str], int] = {pair: i for i, pair in enumerate(merges)}
        self.cache: dict[str, tuple[str, ...]] = {SOT_TEXT: (SOT_TEXT,), EOT_TEXT: (EOT_TEXT,)}
        # Whole texts repeat (the multi-label loss's prompts: 80 templates x the nouns), and cleaning and
        # pre-tokenising them again is a large share of the loader's text work.
        self.text_cache: dict[str, tuple[int, ...]] = {}  # the first ENCODE_CACHE texts seen
        assert len(self.encoder) == 49408 and self.encoder[SOT_TEXT] == SOT_ID and self.encoder[EOT_TEXT] == EOT_ID

    def bpe(self, token: str) -> tuple[str, ...]:
        """Greedy BPE of one pre-token (already byte-mapped): merge the lowest-ranked adjacent pair until none."""
        if token in self.cache:
            return self.cache[token]
        word = [*token[:-1], token[-1] + '</w>']
        while len(word) > 1:
            pairs = set(zip(word, word[1:], strict=False))
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float('inf')))
            if best not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        self.cache[token] = tuple(word)
        return self.cache[token]

    def encode(self, text: str) -> list[int]:
        """Cleaned, pre-tokenised, byte-mapped and BPE-merged ids of ``text`` (without SOT/EOT)."""
        ids = self.text_cache.get(text)
        if ids is None:
            ids = self._encode(text)
            if len(self.text_cache) < ENCODE_CACHE:
                self.text_cache[text] = ids
        return list(ids)

    def _encode(self, text: str) -> tuple[int, ...]:
        ids: list[int] = []
        for token in _PRETOKENIZE.findall(clean_text(text)):
            mapped = ''.join(self.byte_encoder[b] for b in token.encode('utf-8'))
            ids.extend(self.encoder[piece] for piece in self.bpe(mapped))
        return tuple(ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Inverse of ``encode`` up to cleaning: word ends ('</w>') become spaces; invalid UTF-8 is replaced."""
        text = ''.join(self.decoder[int(i)] for i in ids)
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode('utf-8', errors='replace').replace('</w>', ' ')


@cache
def default_tokenizer() -> SimpleTokenizer:
    """The process-wide tokenizer built from the mmsegmentation merges file (built once)."""
    return SimpleTokenizer()


class Tokenize:
    """Text transform: a str gives LongTensor[max_seq_len]; a list of str gives LongTensor[N, max_seq_len].

    Each row is ``[SOT] + encode(text) + [EOT]`` zero-padded. A longer row is cut to ``max_seq_len`` with its
    last id set to EOT when ``truncate`` is true, and raises ``UserError`` otherwise.
    """

    def __init__(self, tokenizer: SimpleTokenizer | None = None, max_seq_len: int = CONTEXT_LENGTH,
                 truncate: bool = True):
        self.tokenizer = tokenizer if tokenizer is not None else default_tokenizer()
        self.max_seq_len = max_seq_len
        self.truncate = truncate

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor:
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        result = torch.zeros(len(texts), self.max_seq_len, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [SOT_ID, *self.tokenizer.encode(text), EOT_ID]
            if len(ids) > self.max_seq_len:
                if not self.truncate:
                    raise UserError(f'text has {len(ids)} tokens, more than the context length '
                                    f'{self.max_seq_len}: {text[:60]!r}...')
                ids = ids[:self.max_seq_len]
                ids[-1] = EOT_ID
            result[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        return result[0] if single else result

    def __repr__(self) -> str:
        return f'{type(self).__name__}(max_seq_len={self.max_seq_len}, truncate={self.truncate})'


def tokenize(texts: str | Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """Tokenize with the default tokenizer, truncating: a list gives LongTensor[N, 77], a single str LongTensor[77]
    (as the reference ``Tokenize`` does; wrap a str in a list to get [1, 77])."""
    return Tokenize(default_tokenizer(), max_seq_len=context_length, truncate=True)(texts)
