"""Zero-shot classification: top-1/top-5 of the images of a loader against prompts of the class names (the one
classifier: the per-epoch evaluation, ``main_group_vit.py --eval``, the quickstart and the sweep call it)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from datasets.builder import DeviceImages
from training.precision import Precision
from utils.distributed import all_reduce_sum
from utils.errors import UserError
from utils.eval_mode import eval_mode


def load_classnames(cls_cfg: DictConfig) -> list[str]:
    """``evaluate.cls.classnames``: None -> the 1000 ImageNet names; a list; or a file with one name per line."""
    names = cls_cfg.get("classnames")
    if names is None:
        from datasets import imagenet_classes

        return list(imagenet_classes)
    if isinstance(names, str):
        path = Path(names)
        if not path.is_file():
            raise UserError(f"evaluate.cls.classnames: file not found: {names}")
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [str(name) for name in names]


@torch.no_grad()
def evaluate_cls(cfg: DictConfig, model: nn.Module, loader: Iterable, precision: Precision, device: torch.device,
                 keep_predictions: bool = False) -> dict[str, Any]:
    """Zero-shot classification over every image of ``loader`` (all ranks together): top-1/top-5 in percent.

    The one classifier: the per-epoch evaluation, ``main_group_vit.py --eval`` and the quickstart call it. Class
    embeddings: each class name in each ``evaluate.cls.template`` prompt, encoded, averaged over prompts, then
    L2-normalised (the reference's ``build_text_embedding``); logits are the images' cosine similarities to them.
    With ``keep_predictions`` the result also holds this rank's ``classnames``, ``targets`` and each image's
    ``top5`` class indices, in loader order.
    """
    from datasets import Tokenize, build_dataset_class_tokens

    classnames = load_classnames(cfg.evaluate.cls)
    tokens = build_dataset_class_tokens(Tokenize(max_seq_len=cfg.data.text_aug.max_seq_len),
                                        cfg.evaluate.cls.template, classnames)  # [N, T, 77]
    k = min(5, len(classnames))
    counts = torch.zeros(3, dtype=torch.long, device=device)  # top-1 hits, top-k hits, images
    images = DeviceImages(False, cfg.data.img_aug, device)  # normalises uint8 images (data.uint8_images)
    targets, top5 = [], []
    with eval_mode(model) as model:
        with precision.autocast(device):
            text_emb = torch.cat([model.build_text_embedding(chunk.to(device)) for chunk in tokens.split(100)])
        for batch in loader:
            image, target = images(batch["image"].to(device, non_blocking=True)), batch["target"].to(device)
            if int(target.max()) >= len(classnames):
                raise UserError(f"validation label {int(target.max())} but only {len(classnames)} class names "
                                "(evaluate.cls.classnames)")
            with precision.autocast(device):
                logits = model.zero_shot_pred(image, text_emb)  # [B, N]
            best = logits.float().topk(k, dim=1).indices  # [B, k]
            hits = best == target[:, None]  # [B, k]
            counts += torch.stack([hits[:, 0].sum(), hits.any(dim=1).sum(), counts.new_tensor(len(target))])
            if keep_predictions:
                targets += target.tolist()
                top5 += best.tolist()
    top1, topk, total = all_reduce_sum(counts).tolist()
    if total == 0:
        raise UserError("zero-shot classification: no validation image could be read")
    results = {"acc1": 100.0 * top1 / total, "acc5": 100.0 * topk / total, "num_images": total}
    if keep_predictions:
        results.update(classnames=classnames, targets=targets, top5=top5)
    return results
