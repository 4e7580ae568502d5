"""The reference-faithful ("naive") computations the benchmarks and tests/test_perf_equivalence.py compare against.

They compute what the reference computes, the way it computes it, and live here rather than in the library:

- attention as an explicit ``softmax(q k^T * scale + mask) v`` (the reference's hand-written attention and
  ``nn.MultiheadAttention`` with a -inf causal mask), over all 77 text positions;
- all 1 + M texts of a sample through the text tower in one pass, then the projector;
- the projectors as kernel-1 ``Conv1d`` over [B, C, L];
- segmentation: mmseg's ``slide_inference`` (one window at a time) and the reference's ``encode_decode``: the image
  encoder runs twice per crop (attention maps, then features), every stage's map is resized, one-hot @ scores;
  mmseg's ``postprocess_result``, then the label as argmax of the softmax.

``reference_faithful()`` switches a model to the first three for the duration of a ``with`` block;
``ReferenceSegInference`` is the segmentor.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from unittest import mock

import segmentation  # noqa: F401  (first: installs the mmcv._ext stand-in that mmseg needs)

# isort: split
import torch
import torch.nn.functional as F
from mmseg.models import EncoderDecoder
from mmseg.models.segmentors.base import BaseSegmentor
from torch import Tensor

import models.transformer
from models.layers import explicit_attention
from models.multi_label_contrastive import MultiLabelContrastive, ProjectMLP
from models.outputs import pack_outputs
from segmentation.evaluation.group_vit_seg import TOP_K, GroupViTSegInference, chained_attn_maps


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
        stack.enter_context(mock.patch.object(models.transformer, "used_length", lambda eot, length: length))
        stack.enter_context(mock.patch.object(MultiLabelContrastive, "encode_text", reference_encode_text))
        stack.enter_context(mock.patch.object(ProjectMLP, "forward", reference_project))
        yield


class ReferenceSegInference(GroupViTSegInference):
    """The reference segmentor: one window at a time (mmseg's slide_inference), two encoder passes per crop."""

    predict = EncoderDecoder.predict  # mmseg's: inference (every channel, every pixel), then postprocess_result
    slide_inference = EncoderDecoder.slide_inference

    @classmethod
    def like(cls, seg: GroupViTSegInference, data_preprocessor: dict) -> ReferenceSegInference:
        """A reference segmentor with ``seg``'s model, text embedding, classes and test settings."""
        ref = cls(seg.model, seg.text_embedding, seg.with_bg, seg.test_cfg, data_preprocessor, seg.classes,
                  seg.palette)
        return ref.to(seg.text_embedding.device).eval()

    def encode_decode(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        return torch.cat([self.encode_decode_one(crop[None]) for crop in inputs])

    def postprocess_result(self, seg_logits: Tensor, data_samples: list | None = None) -> list:
        """mmseg's ``postprocess_result`` (its argmax included), then the reference's label: argmax of the softmax."""
        data_samples = BaseSegmentor.postprocess_result(self, seg_logits, data_samples)
        for sample in data_samples:
            sample.pred_sem_seg.data = sample.seg_logits.data.softmax(dim=0).argmax(dim=0, keepdim=True)
        return data_samples

    def encode_decode_one(self, img: Tensor) -> Tensor:
        """Spec 7.3 step by step, for one crop [1, 3, H, W] -> [1, C, H, W]."""
        attn_dicts = self.model.img_encoder(img, return_attn=True, as_dict=True)["attn_dicts"]  # encoder pass 1
        grouping = chained_attn_maps(attn_dicts, *img.shape[-2:])[-1][0]  # every stage resized; the last [H, W, G]
        onehot = F.one_hot(grouping.argmax(dim=-1), grouping.shape[-1]).to(grouping.dtype)  # [H, W, G]
        image_x, image_feat = self.model.encode_image(img, return_feat=True)  # encoder pass 2
        image_x, image_feat = F.normalize(image_x, dim=-1), F.normalize(image_feat[0], dim=-1)  # [1, E], [G, E]

        scale = self.model.clamped_scale(self.model.logit_scale)
        text = self.text_embedding
        group = image_feat @ text.t() * scale  # [G, N]
        probs = group.softmax(dim=-1)
        image = (image_x @ text.t() * scale).softmax(dim=-1)  # [1, N]
        top = image.topk(min(TOP_K, text.shape[0]), dim=-1).indices[0]
        mask = torch.full_like(group, -math.inf)
        mask[:, top] = 0
        group = (group + mask).softmax(dim=-1) * probs
        scores = (onehot @ group).permute(2, 0, 1)  # [N, H, W]
        if not self.with_bg:
            return scores[None]
        thresh = min(self.bg_thresh, group.max().item())
        background = (scores.max(dim=0, keepdim=True).values < thresh).to(scores.dtype)
        return torch.cat([background, scores])[None]
