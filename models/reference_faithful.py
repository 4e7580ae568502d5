"""The model's computations as the reference writes them, for the benchmarks and tests/test_perf_equivalence.py to
compare our faster paths against:

- attention as an explicit ``softmax(q k^T * scale + mask) v`` (the reference's hand-written attention and
  ``nn.MultiheadAttention`` with a -inf causal mask), over all 77 text positions;
- all 1 + M texts of a sample through the text tower in one pass, then the projector;
- the projectors as kernel-1 ``Conv1d`` over [B, C, L].

``reference_faithful()`` switches every model to them for the duration of a ``with`` block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import torch.nn.functional as F
from torch import Tensor

from . import transformer
from .layers import explicit_attention
from .multi_label_contrastive import MultiLabelContrastive, ProjectMLP
from .outputs import pack_outputs


def sdpa_as_written(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None, dropout_p: float = 0.0,
                    is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False) -> Tensor:
    """``F.scaled_dot_product_attention`` computed as the reference does, the [.., L, S] weights in memory."""
    assert attn_mask is None and not enable_gqa
    return explicit_attention(q, k, v, scale, dropout_p, is_causal)


def reference_encode_text(self: MultiLabelContrastive, text: Tensor, *, lengths: tuple[int, int] | None = None,
                          as_dict: bool = False):
    """All texts of the batch through the text tower and the projector in one pass ([B, 1+M, 77] flattened), all 77
    positions (``lengths`` is ignored)."""
    num_text = text.shape[1] if text.ndim == 3 else 0
    text_x = self.text_projector(self.text_encoder(text.flatten(0, -2) if num_text else text))
    if not num_text:
        return pack_outputs({"text_x": text_x}, as_dict)
    text_x = text_x.view(-1, num_text, text_x.shape[-1])  # [B, 1+M, E]
    return pack_outputs({"text_x": text_x[:, 0], "text_multi_label_x": text_x[:, 1:]}, as_dict)


def reference_project(self: ProjectMLP, x: Tensor) -> Tensor:
    """Conv1d(k=1) -> BN -> ReLU -> Conv1d(k=1) over [B, C, L] ([B, C] is run as L = 1)."""
    squeeze = x.ndim == 2
    if squeeze:
        x = x.unsqueeze(1)
    x = self.linear_out(self.linear_hidden(x.transpose(1, 2))).transpose(1, 2)
    return x.squeeze(1) if squeeze else x


@contextlib.contextmanager
def reference_faithful() -> Iterator[None]:
    """Inside the block, every model computes attention, text and projectors as the reference does (see above)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(F, "scaled_dot_product_attention", sdpa_as_written))
        stack.enter_context(mock.patch.object(transformer, "used_length", lambda eot, length: length))
        stack.enter_context(mock.patch.object(MultiLabelContrastive, "encode_text", reference_encode_text))
        stack.enter_context(mock.patch.object(ProjectMLP, "forward", reference_project))
        yield
