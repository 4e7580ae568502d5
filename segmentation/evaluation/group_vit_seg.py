"""The GroupViT zero-shot segmentor, an mmseg 1.x ``EncoderDecoder`` whose ``encode_decode`` gives the labels of the
reference's (``GroupViTSegInference.encode_decode`` in its segmentation/evaluation/group_vit_seg.py).

Every pixel takes the final group it belongs to most (argmax of the chained soft assignments); each group
gets class scores from its projected group token against the class text embeddings, restricted to the
image-level top-5 classes; background is a threshold rule. ``inference``/``whole_inference`` are mmseg's;
``predict``, ``slide_inference`` and ``postprocess_result`` keep mmseg's semantics (mmseg 0.x's window layout and
averaging, the resize to the original size) but run every window of an image through the encoder as one batch and
compute only the reference's label map; ``predict_images`` does the same for several images of any sizes, their
crops of one size through the encoder together. tests/test_perf_equivalence.py checks them against mmseg's own.

Several background thresholds are computed from one forward (``bg_threshs``): the class scores do not depend on
the threshold, so the segmentor outputs one background channel per threshold before the N class channels, and the
label map of threshold k is the argmax over its background channel and the class channels, as a run with that
threshold alone computes it.

Only the channels some group scores above zero are computed at pixel level (:class:`ChannelScores`): a group's class
scores are zero outside the image's top-5 classes, so an image has at most 5 per window of the N class channels
(COCO-Stuff: 10 of 171). The others are zero at every pixel, and the label rule (:func:`label_map`) accounts for them
exactly; ``slide_inference`` and ``postprocess_result`` give mmseg's dense tensors as before.

Shapes: B crops of H x W pixels, L image tokens, G_k groups at grouping stage k (64 then 8 for the released
models), N text classes, E embedding dim, K background thresholds (1 by default, 0 without background),
C = N + 1 classes (background first) or N, K + N output channels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from mmengine.structures import PixelData
from mmseg.models import EncoderDecoder, SegDataPreProcessor
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.structures import SegDataSample
from mmseg.utils import OptSampleList, SampleList
from torch import Tensor

from datasets.image_check import check_fits
from models import MultiLabelContrastive

TOP_K = 5  # image-level classes a group may be assigned to
# A score less than this below a pixel's best is a near-tie: the softmax before the argmax may round it into an exact
# tie, which the lower label then wins. Above it, exp(score - best) stays at least 2^-22 below exp(0) even with exp
# a few units in the last place off, so the two softmax values stay apart after the division by their common sum.
NEAR_TIE = 2.0 ** -19


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


def upsample_token_map(attn: Tensor, height: int, width: int) -> Tensor:
    """[B, heads, L, G] token-to-group map -> [B, heads * G, H, W], bilinear (align_corners False)."""
    B, heads, L, G = attn.shape
    rows, cols = token_grid(height, width, L)
    grid = attn.reshape(B, heads, rows, cols, G).permute(0, 1, 4, 2, 3).reshape(B, heads * G, rows, cols)
    return F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)


def resize_attn_map(attn: Tensor, height: int, width: int) -> Tensor:
    """[B, heads, L, G] token-to-group map -> [B, heads, H, W, G], bilinear (align_corners False)."""
    B, heads, _, G = attn.shape
    return upsample_token_map(attn, height, width).reshape(B, heads, G, height, width).permute(0, 1, 3, 4, 2)


def chained_assignments(attn_dicts: Sequence[Mapping[str, Tensor] | None]) -> list[Tensor]:
    """Per grouping stage k, each image token's soft distribution over that stage's groups: [B, 1, L, G_k].

    Stage k's soft assignment [B, 1, G_k, T_k] is chained through the earlier stages
    (A_1 = S_0^T [B, 1, L, G_0], A_2 = A_1 @ S_1^T [B, 1, L, G_1]).
    """
    chains, chained = [], None
    for attn_dict in attn_dicts:
        if attn_dict is None:  # a stage without grouping
            continue
        soft = attn_dict["soft"].transpose(-2, -1)  # [B, 1, T_k, G_k]
        chained = soft if chained is None else chained @ soft  # [B, 1, L, G_k]
        chains.append(chained)
    return chains


def chained_attn_maps(attn_dicts: Sequence[Mapping[str, Tensor] | None], height: int, width: int) -> list[Tensor]:
    """Per grouping stage k, each pixel's soft distribution over that stage's groups: [B, H, W, G_k]
    (:func:`chained_assignments` resized to the crop)."""
    return [resize_attn_map(chained, height, width).squeeze(1) for chained in chained_assignments(attn_dicts)]


def slide_windows(height: int, width: int, crop: Sequence[int], stride: Sequence[int]) -> list[tuple[int, ...]]:
    """mmseg's sliding windows (y1, y2, x1, x2) over an H x W image: a grid of ``stride`` steps, each window moved
    back inside the image and to a full ``crop`` (smaller only where the image is)."""
    (h_crop, w_crop), (h_stride, w_stride) = crop, stride
    h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    windows = []
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y2, x2 = min(h_idx * h_stride + h_crop, height), min(w_idx * w_stride + w_crop, width)
            windows.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return windows


def paint(rows: Tensor, group_of_pixel: Tensor) -> Tensor:
    """Each pixel its group's row: [B, G, C] rows and [B, H, W] group indices -> [B, C, H, W]."""
    B, C = rows.shape[0], rows.shape[-1]
    height, width = group_of_pixel.shape[-2:]
    index = group_of_pixel.view(B, 1, -1).expand(-1, C, -1)  # [B, C, H*W]
    return rows.transpose(1, 2).contiguous().gather(2, index).view(B, C, height, width)


@dataclass
class ChannelScores:
    """Score maps of which only some channels can be nonzero: ``values`` [B, A, H, W] are the output channels
    ``channels`` [A] (ascending) of ``num_channels``; every other channel is 0 at every pixel."""

    values: Tensor
    channels: Tensor
    num_channels: int

    @classmethod
    def of_dense(cls, logits: Tensor) -> ChannelScores:
        """Every channel of [B, C, H, W] scores."""
        return cls(logits, torch.arange(logits.shape[1], device=logits.device), logits.shape[1])

    def dense(self) -> Tensor:
        """[B, num_channels, H, W], the missing channels zero."""
        B, _, H, W = self.values.shape
        out = self.values.new_zeros((B, self.num_channels, H, W))
        out[:, self.channels] = self.values
        return out


def label_map(values: Tensor, labels: Tensor, num_labels: int) -> Tensor:
    """The reference's label, argmax over the channels of softmax(scores) (lowest index on ties), of [A, H, W]
    scores of the labels ``labels`` [A] (ascending) of ``num_labels``; the other labels score 0: [1, H, W].

    The softmax does not change which channel is largest, but it can round values a few units in the last place
    apart into an exact tie, which the lowest index then wins. So a pixel's label is the first maximum of its scores,
    a missing label (score 0) counting when the best score is 0; pixels with a score less than ``NEAR_TIE`` below
    the best (a missing label's 0 included), a negative best with labels missing or a non-finite score are decided
    by the softmax over their dense scores, as the reference does.
    """
    best, index = values.max(dim=0, keepdim=True)  # [1, H, W], first maximum
    label = labels[index]
    below = values - best  # [A, H, W], <= 0; what the softmax exponentiates
    undecided = ((below < 0) & (below > -NEAR_TIE)).any(dim=0, keepdim=True)  # [1, H, W]
    undecided |= ~torch.isfinite(values).all(dim=0, keepdim=True)
    if len(labels) < num_labels:
        present = torch.zeros(num_labels, dtype=torch.bool, device=values.device)
        present[labels] = True
        first_missing = int((~present).nonzero()[0])
        label = torch.where(best == 0, label.clamp(max=first_missing), label)
        undecided |= (best < NEAR_TIE) & (best != 0)
    pixels = undecided.flatten().nonzero()[:, 0]  # [P]
    if len(pixels):
        # padded with copies to whole vector blocks: the softmax kernels' vectorised path, as most pixels of a full
        # map take (AVX512 kernels step 32 floats at a time; 64 covers every CPU capability)
        padded = torch.cat([pixels, pixels[:1].expand((-len(pixels)) % 64)])
        dense = values.new_zeros((num_labels, len(padded)))
        dense[labels] = values.flatten(1)[:, padded]
        label.view(-1)[pixels] = dense.softmax(dim=0).max(dim=0).indices[:len(pixels)]
    return label


class GroupViTSegInference(EncoderDecoder):
    """Zero-shot segmentation with a GroupViT ``MultiLabelContrastive`` model and fixed class embeddings.

    Skips ``EncoderDecoder.__init__`` (there is no backbone or decode head); mmseg's ``inference`` and
    ``whole_inference`` run on top of :meth:`encode_decode`, ``predict`` and ``slide_inference`` on
    :meth:`window_scores`.
    """

    def __init__(self, model: MultiLabelContrastive, text_embedding: Tensor, with_bg: bool,
                 test_cfg: Mapping[str, Any], data_preprocessor: Mapping[str, Any],
                 classes: Sequence[str], palette: Sequence[Sequence[int]], bg_threshs: Sequence[float] | None = None,
                 test_pipeline: Sequence[Mapping[str, Any]] = ()):
        """``bg_threshs``: the background thresholds to compute (default: ``test_cfg.bg_thresh``, else 0.95);
        ignored without background. ``test_pipeline``: the dataset config's, for single images."""
        BaseSegmentor.__init__(self, data_preprocessor=SegDataPreProcessor(**data_preprocessor))
        self.model = model
        self.register_buffer("text_embedding", text_embedding)  # [N, E], L2-normalised
        self.with_bg = with_bg
        self.num_classes = text_embedding.shape[0] + int(with_bg)
        self.align_corners = False
        self.test_cfg = ConfigDict(test_cfg)
        if bg_threshs is None:
            bg_threshs = [0.95 if self.test_cfg.get("bg_thresh") is None else self.test_cfg.bg_thresh]
        self.bg_threshs = tuple(float(t) for t in bg_threshs) if with_bg else ()
        self.classes = tuple(classes)  # C names, background first when with_bg
        self.palette = [list(color) for color in palette]  # C RGB colours
        assert len(self.classes) == len(self.palette) == self.num_classes
        self.test_pipeline = [dict(step) for step in test_pipeline]
        self.keep_seg_logits = True  # samples carry the dense seg_logits [C, H, W]; the evaluation reads labels only

    @property
    def out_channels(self) -> int:
        """K background channels (one per threshold) and the N class channels."""
        return len(self.bg_threshs) + self.text_embedding.shape[0]

    @property
    def bg_thresh(self) -> float:
        """The (first) background threshold; setting it keeps only that one (nothing without background)."""
        return self.bg_threshs[0]

    @bg_thresh.setter
    def bg_thresh(self, value: float) -> None:
        self.bg_threshs = (float(value),) if self.with_bg else ()

    def get_attn_maps(self, img: Tensor) -> list[Tensor]:
        """Chained soft group maps of each grouping stage, at the input size: [B, H, W, G_k]."""
        out = self.model.img_encoder(img, return_attn=True, as_dict=True)
        return chained_attn_maps(out["attn_dicts"], *img.shape[-2:])

    def encode_decode(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        """Per-crop scores [B, K + N, H, W] (class scores in [0, 1]; the background channels are 0 or 1).

        The image encoder runs once per crop; the reference ran it twice (for the attention maps and the
        features), which gives the same values. Every pixel takes its final group's row of a [B, G, C] table.
        """
        out = self.model.img_encoder(inputs, return_feat=True, return_attn=True, as_dict=True)
        return self.decode(out, *inputs.shape[-2:])

    def decode(self, out: Mapping[str, Any], height: int, width: int) -> Tensor:
        """:meth:`encode_decode` after the image encoder: its ``as_dict`` outputs (with features and attention)
        -> scores [B, K + N, height, width]."""
        group_of_pixel, rows = self.group_rows(out, height, width)
        return paint(rows, group_of_pixel)

    def group_rows(self, out: Mapping[str, Any], height: int, width: int) -> tuple[Tensor, Tensor]:
        """Each pixel's final group [B, H, W] and each group's output scores [B, G, K + N], from the image
        encoder's ``as_dict`` outputs (with features and attention) for crops of height x width."""
        final = chained_assignments(out["attn_dicts"])[-1]  # [B, 1, L, G]
        group_of_pixel = upsample_token_map(final, height, width).max(dim=1).indices  # [B, H, W], first max wins
        image_x = F.normalize(self.model.img_projector(out["x"]), dim=-1)  # [B, E]
        image_feat = F.normalize(self.model.img_projector(out["feat"]), dim=-1)  # [B, G, E]

        scale = self.model.clamped_scale(self.model.logit_scale)  # exp(logit_scale), at most 100
        text = self.text_embedding
        group_logits = image_feat @ text.t() * scale  # [B, G, N]
        group_probs = group_logits.softmax(dim=-1)
        image_probs = (image_x @ text.t() * scale).softmax(dim=-1)  # [B, N]
        top = image_probs.topk(min(TOP_K, text.shape[0]), dim=-1).indices  # [B, k]
        keep = torch.zeros_like(image_probs, dtype=torch.bool).scatter_(1, top, True)  # [B, N]
        rows = group_logits.masked_fill(~keep[:, None, :], float("-inf")).softmax(dim=-1) * group_probs  # [B, G, N]
        if self.with_bg:
            # Background where no class reaches min(bg_thresh, the best group score of the crop); a pixel's class
            # scores are its group's row, so the rule is decided per group.
            best = rows.flatten(1).max(dim=1).values  # [B]
            group_best = rows.max(dim=-1, keepdim=True).values  # [B, G, 1]
            background = [group_best < best.clamp(max=t)[:, None, None] for t in self.bg_threshs]  # K x [B, G, 1]
            rows = torch.cat([*(bg.to(rows.dtype) for bg in background), rows], dim=-1)  # [B, G, K + N]
        return group_of_pixel, rows

    def inference(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        """mmseg's ``inference`` (slide or whole), after checking that the resized image covers one patch."""
        self.check_fits(inputs, batch_img_metas)
        return super().inference(inputs, batch_img_metas)

    def check_fits(self, inputs: Tensor, batch_img_metas: list[dict]) -> None:
        patch_size = self.model.img_encoder.patch_embed.patch_size
        check_fits(inputs.shape[-1], inputs.shape[-2], patch_size, batch_img_metas[0].get("img_path") or "the image",
                   after="after the test pipeline's resize")

    def slide_inference(self, inputs: Tensor, batch_img_metas: list[dict]) -> Tensor:
        """mmseg's sliding-window inference (same windows, sum, division by the per-pixel window count), with every
        window of the batch through the encoder at once."""
        return self.window_scores(inputs, self.windows(inputs)).dense()

    def windows(self, inputs: Tensor) -> list[tuple[int, ...]]:
        """The crops (y1, y2, x1, x2) of ``inputs`` [B, 3, H, W]: mmseg's sliding windows, or the whole image."""
        height, width = inputs.shape[-2:]
        mode = self.test_cfg.get("mode", "whole")
        assert mode in ("slide", "whole"), f'only "slide" or "whole" test mode are supported, not {mode!r}'
        if mode == "slide":
            return slide_windows(height, width, self.test_cfg.crop_size, self.test_cfg.stride)
        return [(0, height, 0, width)]

    def window_scores(self, inputs: Tensor, windows: Sequence[tuple[int, ...]]) -> ChannelScores:
        """The scores of ``inputs`` [B, 3, H, W] averaged over ``windows`` (all of one size; each pixel's sum divided
        by its window count, as mmseg's slide_inference does), in the channels some group of the batch scores."""
        crops = torch.cat([inputs[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in windows])  # [windows * B, 3, h, w]
        group_of_pixel, rows = self.crop_rows(crops)
        return self.average_windows(inputs, windows, group_of_pixel, rows)

    def crop_rows(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`group_rows` of crops [B, 3, h, w], through the image encoder at once: [B, h, w], [B, G, K + N]."""
        out = self.model.img_encoder(crops, return_feat=True, return_attn=True, as_dict=True)
        return self.group_rows(out, *crops.shape[-2:])

    def average_windows(self, inputs: Tensor, windows: Sequence[tuple[int, ...]], group_of_pixel: Tensor,
                        rows: Tensor) -> ChannelScores:
        """The scores of ``inputs`` [B, 3, H, W] from its crops' groups: ``group_of_pixel`` [windows * B, h, w] and
        ``rows`` [windows * B, G, K + N], window by window (B crops each), summed and divided by each pixel's window
        count, in the channels some group scores."""
        batch_size, _, height, width = inputs.shape
        active = rows.ne(0).flatten(0, 1).any(dim=0)  # [K + N]
        active[:max(len(self.bg_threshs), 1)] = True  # the background channels (without: channel 0) always
        channels = active.nonzero()[:, 0]  # [A]
        crop_scores = paint(rows[..., channels], group_of_pixel).split(batch_size)  # windows x [B, A, h, w]
        preds = inputs.new_zeros((batch_size, len(channels), height, width))
        count = inputs.new_zeros((batch_size, 1, height, width))
        for (y1, y2, x1, x2), scores in zip(windows, crop_scores, strict=True):
            preds[:, :, y1:y2, x1:x2] += scores
            count[:, :, y1:y2, x1:x2] += 1
        return ChannelScores(preds.div_(count), channels, self.out_channels)

    def images_window_scores(self, images: Sequence[Tensor]) -> list[ChannelScores]:
        """:meth:`window_scores` of several images [1, 3, H_i, W_i] of any sizes, each over its own :meth:`windows`:
        the crops of one size, from all the images, go through the encoder together. Each image keeps the channels
        its own groups score, as when it is segmented alone."""
        windows = [self.windows(image) for image in images]
        by_size: dict[tuple[int, int], list[tuple[int, int]]] = {}  # crop size -> (image, window) indices
        for i, image_windows in enumerate(windows):
            for j, (y1, y2, x1, x2) in enumerate(image_windows):
                by_size.setdefault((y2 - y1, x2 - x1), []).append((i, j))
        crop_out: dict[tuple[int, int], tuple[Tensor, Tensor]] = {}  # (image, window) -> [h, w], [G, K + N]
        for items in by_size.values():
            crops = []
            for i, j in items:
                y1, y2, x1, x2 = windows[i][j]
                crops.append(images[i][:, :, y1:y2, x1:x2])
            group_of_pixel, rows = self.crop_rows(torch.cat(crops))  # [crops, h, w], [crops, G, K + N]
            crop_out.update(zip(items, zip(group_of_pixel, rows, strict=True), strict=True))
        scores = []
        for i, image in enumerate(images):
            outs = [crop_out[i, j] for j in range(len(windows[i]))]
            group_of_pixel = torch.stack([g for g, _ in outs])  # [windows, h, w]
            rows = torch.stack([r for _, r in outs])  # [windows, G, K + N]
            scores.append(self.average_windows(image, windows[i], group_of_pixel, rows))
        return scores

    def predict_images(self, images: Sequence[Tensor], data_samples: SampleList) -> SampleList:
        """:meth:`predict` of several images [1, 3, H_i, W_i] of any sizes, one sample each, with the crops of one
        size batched through the encoder (:meth:`images_window_scores`)."""
        for image, sample in zip(images, data_samples, strict=True):
            self.check_fits(image, [sample.metainfo])
        scores = self.images_window_scores(images)
        return [self.postprocess_scores(s, [sample])[0] for s, sample in zip(scores, data_samples, strict=True)]

    def predict(self, inputs: Tensor, data_samples: OptSampleList = None) -> SampleList:
        """mmseg's ``predict`` (``inference``, then ``postprocess_result``) on the channels some group scores."""
        metas = [s.metainfo for s in data_samples] if data_samples is not None else \
            [dict(ori_shape=inputs.shape[2:], img_shape=inputs.shape[2:], pad_shape=inputs.shape[2:],
                  padding_size=[0, 0, 0, 0])] * inputs.shape[0]
        self.check_fits(inputs, metas)
        return self.postprocess_scores(self.window_scores(inputs, self.windows(inputs)), data_samples)

    def postprocess_result(self, seg_logits: Tensor, data_samples: OptSampleList = None) -> SampleList:
        """mmseg's ``postprocess_result`` on dense [B, K + N, H, W] scores (see :meth:`postprocess_scores`)."""
        return self.postprocess_scores(ChannelScores.of_dense(seg_logits), data_samples)

    def postprocess_scores(self, scores: ChannelScores, data_samples: OptSampleList = None) -> SampleList:
        """mmseg's ``postprocess_result``: padding cut off, flip undone, bilinear resize to ``ori_shape`` (nothing of
        this without ``data_samples``). The label is the reference's, the argmax of the softmax over channels (mmseg
        0.x; the lowest index wins ties), instead of mmseg 1.x's argmax of the raw scores, which is not computed.

        ``seg_logits`` [C, H, W] (unless ``keep_seg_logits`` is off) and ``pred_sem_seg`` are the first threshold's;
        with several thresholds, ``pred_sem_seg_per_thresh`` [K, H, W] holds every threshold's label map."""
        values = scores.values
        metas = [None] * len(values) if data_samples is None else [s.metainfo for s in data_samples]
        data_samples = data_samples or [SegDataSample() for _ in range(len(values))]
        height, width = values.shape[-2:]
        for i, (sample, meta) in enumerate(zip(data_samples, metas, strict=True)):
            logits = values[i:i + 1]  # [1, A, H, W]
            if meta is not None:
                left, right, top, bottom = meta.get("img_padding_size", meta.get("padding_size", [0] * 4))
                logits = logits[:, :, top:height - bottom, left:width - right]
                if meta.get("flip"):
                    direction = meta.get("flip_direction")
                    assert direction in ("horizontal", "vertical"), direction
                    logits = logits.flip(dims=(3,) if direction == "horizontal" else (2,))
                logits = F.interpolate(logits, size=tuple(meta["ori_shape"][:2]), mode="bilinear",
                                       align_corners=self.align_corners)
            per_thresh = self.split_thresholds(ChannelScores(logits, scores.channels, scores.num_channels))
            labels = [label_map(s.values[0], s.channels, s.num_channels) for s in per_thresh]  # K x [1, H, W]
            sample.set_data({"pred_sem_seg": PixelData(data=labels[0])})
            if self.keep_seg_logits:
                sample.set_data({"seg_logits": PixelData(data=per_thresh[0].dense()[0])})
            if len(labels) > 1:
                sample.set_data({"pred_sem_seg_per_thresh": PixelData(data=torch.cat(labels))})
        return data_samples

    def split_thresholds(self, scores: ChannelScores) -> list[ChannelScores]:
        """Output-channel scores (K background channels, then N classes) -> one score map per threshold over the
        C classes (its background channel first, then the N classes)."""
        K = len(self.bg_threshs)
        if K == 0:
            return [scores]
        channels = scores.channels
        per_thresh = []
        for k in range(K):
            keep = (channels == k) | (channels >= K)  # [A]
            labels = torch.where(channels[keep] == k, 0, channels[keep] - K + 1)
            per_thresh.append(ChannelScores(scores.values[:, keep], labels, self.num_classes))
        return per_thresh
