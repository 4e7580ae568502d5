"""Does a GroupViT's grouping follow the objects? Diagnostics of the groups behind a zero-shot segmentation.

On a labelled set (images already normalised, masks with 0 = background):
- oracle_soft / oracle_hard: mIoU when each final group (soft chain, the segmentor's / hard chain, the
  training assignments) is labelled with its majority true class: the best any labelling of these groups reaches;
- groups: final groups used per image (soft chain);
- s0_max: the mean max-probability of the stage-0 soft assignment (1 / G = uniform: every pixel the same group);
- label_agreement: the share of object pixels whose group's zero-shot class (before the background rule) is the
  group's majority true class;
- miou_by_bg: the segmentor's mIoU at each background threshold (choose one on a validation set, never on the
  held-out set).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .group_vit_seg import GroupViTSegInference, chained_assignments, upsample_token_map
from .miou import iou_metrics, label_areas

BG_THRESHOLDS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def miou(areas: Sequence[tuple[torch.Tensor, ...]]) -> float:
    """mIoU x100 (not rounded) of summed ``label_areas``: the IoU metric's NaN-mean over the classes (absent from
    truth and prediction: left out)."""
    return iou_metrics(areas, decimals=None)["mIoU"]


def group_majority(groups: torch.Tensor, labels: torch.Tensor, num_groups: int, num_classes: int) -> torch.Tensor:
    """Each group's most frequent label (ties and empty groups: the lowest label): [B, G] from [B, P] each."""
    counts = F.one_hot(groups, num_groups).float().transpose(1, 2) @ F.one_hot(labels, num_classes).float()  # [B, G, K]
    return counts.argmax(-1)


def majority_labels(groups: torch.Tensor, labels: torch.Tensor, num_groups: int, num_classes: int) -> torch.Tensor:
    """Each pixel gets the most frequent label of its group: [B, P] from [B, P] groups and labels."""
    return group_majority(groups, labels, num_groups, num_classes).gather(1, groups)


def hard_chain(attn_dicts: Sequence[Mapping[str, torch.Tensor] | None]) -> torch.Tensor:
    """Each image token's final group by the hard assignments, chained through the stages: [B, L]."""
    group = None
    for attn_dict in attn_dicts:
        if attn_dict is None:  # a stage without grouping
            continue
        stage = attn_dict["hard"].argmax(-2)[:, 0]  # [B, T_k]: the group of each of the stage's input tokens
        group = stage if group is None else stage.gather(1, group)
    return group


@torch.no_grad()
def grouping_diagnostics(segmentor: GroupViTSegInference, images: torch.Tensor, masks: torch.Tensor,
                         batch_size: int = 250, thresholds: Sequence[float] = BG_THRESHOLDS) -> dict[str, float]:
    """The diagnostics of the module docstring on ``images`` (float [N, 3, H, W], normalised) and ``masks``
    ([N, H, W], class indices of the segmentor's classes, 0 = background; the segmentor has a background class).
    The segmentor's own thresholds are restored afterwards."""
    model, num_classes, bg_before = segmentor.model, segmentor.num_classes, segmentor.bg_threshs
    K = len(thresholds)
    hists = {t: [] for t in thresholds}  # label_areas per batch
    oracle = {c: [] for c in ("soft", "hard")}
    groups_used, s0_max, agree, object_pixels = [], [], 0, 0
    segmentor.bg_threshs = tuple(float(t) for t in thresholds)
    try:
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(segmentor.text_embedding.device)
            gt = masks[start:start + batch_size].flatten(1).long().to(x.device)  # [B, HW]
            H, W = x.shape[-2:]
            out = model.img_encoder(x, return_feat=True, return_attn=True, as_dict=True)
            scores = segmentor.decode(out, H, W)  # [B, K + N, H, W]: one background channel per threshold
            for k, t in enumerate(thresholds):
                labels = torch.cat([scores[:, k:k + 1], scores[:, K:]], dim=1).argmax(1)  # [B, H, W]
                hists[t].append(label_areas(labels.flatten(), gt.flatten(), num_classes))
            G = out["feat"].shape[1]
            soft = upsample_token_map(chained_assignments(out["attn_dicts"])[-1], H, W).argmax(1).flatten(1)  # [B, HW]
            hard_tokens = F.one_hot(hard_chain(out["attn_dicts"]), G).float()[:, None]  # [B, 1, L, G]
            hard = upsample_token_map(hard_tokens, H, W).argmax(1).flatten(1)  # [B, HW]
            for name, groups in (("soft", soft), ("hard", hard)):
                oracle[name].append(label_areas(majority_labels(groups, gt, G, num_classes).flatten(), gt.flatten(),
                                                num_classes))
            groups_used += [len(g.unique()) for g in soft]
            s0_max.append(out["attn_dicts"][0]["soft"].amax(-2).mean((-1, -2)).cpu())  # [B]
            feat = F.normalize(model.img_projector(out["feat"]), dim=-1)  # [B, G, E]
            group_class = (feat @ segmentor.text_embedding.t()).argmax(-1) + int(segmentor.with_bg)  # [B, G]
            hit = (group_class == group_majority(soft, gt, G, num_classes)).gather(1, soft)  # [B, HW]
            agree += hit[gt > 0].sum().item()
            object_pixels += (gt > 0).sum().item()
    finally:
        segmentor.bg_threshs = bg_before
    return {"oracle_soft": round(miou(oracle["soft"]), 2), "oracle_hard": round(miou(oracle["hard"]), 2),
            "groups": round(float(np.mean(groups_used)), 2), "s0_max": round(torch.cat(s0_max).mean().item(), 3),
            "label_agreement": round(100 * agree / max(object_pixels, 1), 1),
            "miou_by_bg": {t: round(miou(h), 2) for t, h in hists.items()}}


def patch_grid_bound(masks: torch.Tensor, patch: int, num_classes: int) -> float:
    """The best mIoU x100 any ``patch`` x ``patch``-token segmentation reaches on [N, H, W] masks: every patch
    labelled with its true majority class, the one-hot patch map upsampled bilinearly (align_corners False, as the
    segmentor upsamples its group maps), argmax."""
    return miou([label_areas(patch_majority_map(masks, patch, num_classes).flatten(), masks.flatten().long(),
                             num_classes)])


def patch_majority_map(masks: torch.Tensor, patch: int, num_classes: int) -> torch.Tensor:
    """[B, H, W] label masks -> [B, H, W] labels: each patch's majority class (ties: the lowest), upsampled."""
    B, H, W = masks.shape
    onehot = F.one_hot(masks.long(), num_classes).permute(0, 3, 1, 2).float()  # [B, K, H, W]
    shares = F.avg_pool2d(onehot, patch)  # [B, K, H / P, W / P]
    majority = F.one_hot(shares.argmax(1), num_classes).permute(0, 3, 1, 2).float()  # [B, K, H / P, W / P]
    return F.interpolate(majority, size=(H, W), mode="bilinear", align_corners=False).argmax(1)  # [B, H, W]
