"""The patch-grid bound of a world: the mIoU of the best segmentation any P x P-token model can produce.

Every patch is labelled with its true majority class; the one-hot patch map is upsampled to the image bilinearly
(align_corners False, as the segmentor upsamples its group maps) and each pixel takes the argmax. What is left is
lost to the token grid alone (object borders inside patches, objects smaller than a patch).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def patch_majority_map(masks: torch.Tensor, patch: int, num_classes: int) -> torch.Tensor:
    """[B, H, W] label masks -> [B, H, W] labels: each patch's majority class, bilinearly upsampled (ties: the
    lowest label)."""
    B, H, W = masks.shape
    onehot = F.one_hot(masks.long(), num_classes).permute(0, 3, 1, 2).float()  # [B, K, H, W]
    counts = F.avg_pool2d(onehot, patch)  # [B, K, H / P, W / P]: class shares per patch
    majority = F.one_hot(counts.argmax(1), num_classes).permute(0, 3, 1, 2).float()  # [B, K, H / P, W / P]
    return F.interpolate(majority, size=(H, W), mode="bilinear", align_corners=False).argmax(1)  # [B, H, W]


def confusion(gt: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixel confusion matrix [K, K] (rows: truth, columns: prediction) of two label tensors of one shape."""
    index = gt.flatten().long() * num_classes + pred.flatten().long()
    return torch.bincount(index, minlength=num_classes * num_classes).view(num_classes, num_classes)


def miou(hist: torch.Tensor | np.ndarray) -> float:
    """mIoU x100 of a confusion matrix, NaN-mean over the classes (absent from truth and prediction: left out)."""
    hist = torch.as_tensor(hist).double()
    inter = hist.diag()
    return 100 * (inter / (hist.sum(0) + hist.sum(1) - inter)).nanmean().item()


def patch_grid_bound(masks: torch.Tensor, patch: int, num_classes: int) -> float:
    """The bound (mIoU x100) over a set of [B, H, W] masks."""
    return miou(confusion(masks, patch_majority_map(masks, patch, num_classes), num_classes))
