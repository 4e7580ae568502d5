"""The reference's segmentor, for the benchmarks and tests/test_perf_equivalence.py to compare ours against: mmseg's
``slide_inference`` (one window at a time) and the reference's ``encode_decode``: the image encoder runs twice per
crop (attention maps, then features), every stage's map is resized, one-hot @ scores; mmseg's
``postprocess_result``, then the label as argmax of the softmax.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from mmseg.models import EncoderDecoder
from mmseg.models.segmentors.base import BaseSegmentor
from torch import Tensor

from .group_vit_seg import TOP_K, GroupViTSegInference, chained_attn_maps


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
