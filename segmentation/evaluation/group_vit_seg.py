"""The GroupViT zero-shot segmentor, an mmseg 1.x ``EncoderDecoder`` whose ``encode_decode`` is spec 7.3.

Every pixel takes the final group it belongs to most (argmax of the chained soft assignments); each group
gets class scores from its projected group token against the class text embeddings, restricted to the
image-level top-5 classes; background is a threshold rule. Sliding windows, the resize to the original
image size and the label map come from mmseg (``slide_inference``/``whole_inference``/``postprocess_result``),
which keep mmseg 0.x's window layout and averaging.

Shapes: B crops of H x W pixels, L image tokens, G_k groups at grouping stage k (64 then 8 for the released
models), N text classes, E embedding dim, C = N + 1 output channels (background first) or N.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmseg.models import EncoderDecoder, SegDataPreProcessor
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.utils import OptSampleList, SampleList
from torch import Tensor

from models import MultiLabelContrastive

TOP_K = 5  # image-level classes a group may be assigned to


def token_grid(height: int, width: int, num_tokens: int) -> tuple[int, int]:
    """The (rows, cols) token grid of an H x W crop with L tokens, inferred as the reference does."""
    scale = round(math.sqrt(height * width // num_tokens))
    if height > width:
        cols = width // scale
        rows = num_tokens // cols
    else:
        rows = height // scale
        cols = num_tokens // rows
    if rows * cols != num_tokens:
        raise RuntimeError(f"cannot infer a token grid for a {height}x{width} crop with {num_tokens} tokens")
    return rows, cols


def resize_attn_map(attn: Tensor, height: int, width: int) -> Tensor:
    """[B, heads, L, G] token-to-group map -> [B, heads, H, W, G], bilinear (align_corners False)."""
    B, heads, L, G = attn.shape
    rows, cols = token_grid(height, width, L)
    grid = attn.reshape(B, heads, rows, cols, G).permute(0, 1, 4, 2, 3).reshape(B, heads * G, rows, cols)
    grid = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
    return grid.reshape(B, heads, G, height, width).permute(0, 1, 3, 4, 2)


def chained_attn_maps(attn_dicts: Sequence[Mapping[str, Tensor] | None], height: int, width: int) -> list[Tensor]:
    """Per grouping stage k, each pixel's soft distribution over that stage's groups: [B, H, W, G_k].

    Stage k's soft assignment [B, 1, G_k, T_k] is chained through the earlier stages
    (A_1 = S_0^T [B, 1, L, G_0], A_2 = A_1 @ S_1^T [B, 1, L, G_1]), then resized to the crop.
    """
    maps, chained = [], None
    for attn_dict in attn_dicts:
        if attn_dict is None:  # a stage without grouping
            continue
        soft = attn_dict["soft"].transpose(-2, -1)  # [B, 1, T_k, G_k]
        chained = soft if chained is None else chained @ soft  # [B, 1, L, G_k]
        maps.append(resize_attn_map(chained, height, width).squeeze(1))
    return maps


class GroupViTSegInference(EncoderDecoder):
    """Zero-shot segmentation with a GroupViT ``MultiLabelContrastive`` model and fixed class embeddings.

    Skips ``EncoderDecoder.__init__`` (there is no backbone or decode head); mmseg's ``predict``,
    ``inference``, ``slide_inference`` and ``whole_inference`` run on top of :meth:`encode_decode`.
    """

    def __init__(self, model: MultiLabelContrastive, text_embedding: Tensor, with_bg: bool,
                 test_cfg: Mapping[str, Any], data_preprocessor: Mapping[str, Any],
                 classes: Sequence[str], palette: Sequence[Sequence[int]]):
        BaseSegmentor.__init__(self, data_preprocessor=SegDataPreProcessor(**data_preprocessor))
        self.model = model
        self.register_buffer("text_embedding", text_embedding)  # [N, E], L2-normalised
        self.with_bg = with_bg
        self.num_classes = self.out_channels = text_embedding.shape[0] + int(with_bg)
        self.align_corners = False
        self.test_cfg = ConfigDict(test_cfg)
        self.bg_thresh = float(self.test_cfg.get("bg_thresh", 0.95))
        self.classes = tuple(classes)  # C names, background first when with_bg
        self.palette = [list(color) for color in palette]  # C RGB colours
        assert len(self.classes) == len(self.palette) == self.num_classes

    def get_attn_maps(self, img: Tensor) -> list[Tensor]:
        """Chained soft group maps of each grouping stage, at the input size: [B, H, W, G_k]."""
        out = self.model.img_encoder(img, return_attn=True, as_dict=True)
        return chained_attn_maps(out["attn_dicts"], *img.shape[-2:])

    def encode_decode(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        """Per-crop class scores [B, C, H, W] (scores in [0, 1]; the background channel is 0 or 1).

        The image encoder runs once per crop; the reference ran it twice (for the attention maps and the
        features), which gives the same values.
        """
        height, width = inputs.shape[-2:]
        out = self.model.img_encoder(inputs, return_feat=True, return_attn=True, as_dict=True)
        group_of_pixel = chained_attn_maps(out["attn_dicts"], height, width)[-1].argmax(dim=-1)  # [B, H, W]
        image_x = F.normalize(self.model.img_projector(out["x"]), dim=-1)  # [B, E]
        image_feat = F.normalize(self.model.img_projector(out["feat"]), dim=-1)  # [B, G, E]

        scale = self.model.clamped_scale(self.model.logit_scale)  # exp(logit_scale), at most 100
        text = self.text_embedding
        group_logits = image_feat @ text.t() * scale  # [B, G, N]
        group_probs = group_logits.softmax(dim=-1)
        image_probs = (image_x @ text.t() * scale).softmax(dim=-1)  # [B, N]
        top = image_probs.topk(min(TOP_K, text.shape[0]), dim=-1).indices  # [B, k]
        keep = torch.zeros_like(image_probs, dtype=torch.bool).scatter_(1, top, True)  # [B, N]
        group_scores = group_logits.masked_fill(~keep[:, None, :], float("-inf")).softmax(dim=-1) * group_probs

        # Each pixel gets its group's row (the reference's one-hot @ scores, which selects the same values).
        B, N = group_scores.shape[0], group_scores.shape[-1]
        index = group_of_pixel.reshape(B, -1, 1).expand(-1, -1, N)  # [B, H*W, N]
        scores = group_scores.gather(1, index).transpose(1, 2).reshape(B, N, height, width)  # [B, N, H, W]
        if not self.with_bg:
            return scores
        # Background where no class reaches min(bg_thresh, the best group score of the crop).
        thresh = group_scores.flatten(1).max(dim=1).values.clamp(max=self.bg_thresh)  # [B]
        background = scores.max(dim=1, keepdim=True).values < thresh[:, None, None, None]  # [B, 1, H, W]
        return torch.cat([background.to(scores.dtype), scores], dim=1)

    def postprocess_result(self, seg_logits: Tensor, data_samples: OptSampleList = None) -> SampleList:
        """mmseg's resize to the original size; the label is the argmax of the softmax (mmseg 0.x, lowest index
        wins ties) rather than of the raw scores."""
        data_samples = super().postprocess_result(seg_logits, data_samples)
        for sample in data_samples:
            sample.pred_sem_seg.data = sample.seg_logits.data.softmax(dim=0).argmax(dim=0, keepdim=True)
        return data_samples
