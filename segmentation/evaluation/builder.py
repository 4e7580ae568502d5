"""Build the segmentation config, dataset, dataloader, image pipeline and segmentor (:func:`build_segmentor`, the
one way every front end, benchmark and the training loop make one).

The dataset configs (``segmentation/configs/_base_/datasets/*.py``) are mmengine configs with the keys
``data_root``, ``test_pipeline``, ``test_dataloader`` (``num_workers`` and the ``dataset``, read relative to
``data_root``), ``data_preprocessor`` and ``test_cfg`` (the segmentor's ``bg_thresh``, ``mode``, ``stride``,
``crop_size``); what they share lives in ``segmentation/configs/_base_/zero_shot.py``, which they inherit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from mmengine.config import Config
from mmengine.dataset import BaseDataset, Compose, DefaultSampler, pseudo_collate
from mmseg.registry import DATASETS, TRANSFORMS
from torch.utils.data import DataLoader

from datasets import Tokenize, build_dataset_class_tokens
from models import MultiLabelContrastive
from utils.config import parse_opts
from utils.errors import UserError, one_line

from ..datasets.palette import distinct_colors
from ..image_files import LoadCheckedAnnotations, LoadCheckedImageFromFile
from .group_vit_seg import GroupViTSegInference

TEST_MODES = ("slide", "whole")


def load_seg_config(path: str | Path, opts: Sequence[str] = ()) -> Config:
    """Load a dataset config and apply ``key=value`` overrides (values parsed as YAML; keys must exist)."""
    if not Path(path).is_file():
        raise UserError(f"segmentation config not found: {path}")
    cfg = Config.fromfile(str(path))
    for item in parse_opts([str(o) for o in opts]):
        key, text = (part.strip() for part in item.split("=", 1))
        node: Any = cfg.to_dict()
        for part in key.split("."):
            if isinstance(node, list):
                raise UserError(f"evaluate.seg.opts cannot set '{key}' inside a list (the pipelines are lists; the "
                                "test resolution is evaluate.seg.short_side)")
            if not isinstance(node, Mapping) or part not in node:
                raise UserError(f"unknown key '{key}' in segmentation config {path} (from evaluate.seg.opts)")
            node = node[part]
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UserError(f"cannot parse evaluate.seg.opts item '{item}': {one_line(e)}") from e
        cfg.merge_from_dict({key: value})
    if cfg.test_cfg.get("mode") not in TEST_MODES:
        raise UserError(f"test_cfg.mode must be one of {', '.join(TEST_MODES)}, not {cfg.test_cfg.get('mode')!r}")
    return cfg


def _require(path: Path, what: str, is_dir: bool = True) -> None:
    if not (path.is_dir() if is_dir else path.is_file()):
        raise UserError(f"segmentation dataset not found: {what} {path} does not exist (see the README's "
                        "data layout, or point elsewhere with --opts \"evaluate.seg.opts=[data_root=/path]\")")


def build_seg_dataset(seg_cfg: Config) -> BaseDataset:
    """The test dataset; a missing folder, split file or label file is a one-line UserError naming it."""
    root = Path(seg_cfg.data_root).expanduser()
    ds_cfg = copy.deepcopy(seg_cfg.test_dataloader.dataset.to_dict())
    _require(root, "data_root")
    for key, sub in ds_cfg.get("data_prefix", {}).items():
        _require(root / sub, {"img_path": "image folder", "seg_map_path": "label folder"}.get(key, key))
    if ds_cfg.get("ann_file"):
        _require(root / ds_cfg["ann_file"], "split file", is_dir=False)
    ds_cfg["data_root"] = str(root)
    # images and label maps are checked as they are read: a bad one stops the evaluation with one line naming it
    checked = {"LoadImageFromFile": LoadCheckedImageFromFile, "LoadAnnotations": LoadCheckedAnnotations}
    ds_cfg["pipeline"] = [checked[t["type"]](**{k: v for k, v in t.items() if k != "type"}) if t["type"] in checked
                          else TRANSFORMS.build(t) for t in ds_cfg["pipeline"]]
    dataset = DATASETS.build(ds_cfg)
    if len(dataset) == 0:
        raise UserError(f"segmentation dataset {root} has no images")
    for step in dataset.pipeline.transforms:
        if isinstance(step, LoadCheckedAnnotations):
            step.num_classes, step.ignore_index = len(dataset.metainfo["classes"]), dataset.ignore_index
    labels = (dataset.get_data_info(i)["seg_map_path"] for i in range(len(dataset)))
    unlabelled = [path for path in labels if not Path(path).is_file()]
    if unlabelled:
        raise UserError(f"segmentation dataset {root}: {len(unlabelled)} of {len(dataset)} label files are missing "
                        f"(first: {unlabelled[0]})")
    return dataset


def build_seg_dataloader(dataset: BaseDataset, seg_cfg: Config) -> DataLoader:
    """One image per batch; under torch.distributed each rank takes every world-th image (mmengine pads the
    last round and drops the padding when the metric collects the results)."""
    return DataLoader(dataset, batch_size=1, sampler=DefaultSampler(dataset, shuffle=False),
                      num_workers=seg_cfg.test_dataloader.get("num_workers", 0), collate_fn=pseudo_collate)


def build_image_pipeline(test_pipeline: Sequence[Mapping[str, Any]]) -> Compose:
    """A dataset config's ``test_pipeline`` for a BGR array instead of a dataset file (no annotation):
    dict(img=...) -> packed."""
    skip = {"LoadImageFromFile", "LoadAnnotations"}
    steps = [dict(type="LoadImageFromNDArray"), *(t for t in test_pipeline if t["type"] not in skip)]
    return Compose([TRANSFORMS.build(copy.deepcopy(t)) for t in steps])


def _class_meta(source: BaseDataset | Mapping[str, Any] | Sequence[str]) -> tuple[list[str], list[list[int]]]:
    meta = source.metainfo if isinstance(source, BaseDataset) else source
    if not isinstance(meta, Mapping):
        meta = {"classes": meta}
    classes = list(meta["classes"])
    palette = meta.get("palette") or distinct_colors(len(classes)).tolist()
    return classes, [list(map(int, color)) for color in palette]


def build_segmentor(model: MultiLabelContrastive, classes: BaseDataset | Mapping[str, Any] | Sequence[str],
                    seg_cfg: Config | str | Path, opts: Sequence[str] = (), template: str = "simple",
                    text_transform: Callable[[str], torch.Tensor] | None = None,
                    bg_threshs: Sequence[float] | None = None) -> GroupViTSegInference:
    """The segmentor on ``model``'s device, in eval mode, with one text embedding per class.

    ``classes``: a dataset, its ``metainfo``-like mapping (``classes``, optional ``palette``) or class names. A
    first class named 'background' is never prompted: it comes from the threshold rule, at
    ``seg_cfg.test_cfg.bg_thresh`` or at each of ``bg_threshs`` (computed from one forward). ``seg_cfg``: a loaded
    dataset config, or its path with ``opts`` (see :func:`load_seg_config`). ``text_transform`` tokenises a prompt
    (default: ``Tokenize()``, the CLIP tokenizer at 77 tokens).
    """
    if not isinstance(seg_cfg, Config):
        seg_cfg = load_seg_config(seg_cfg, opts)
    elif opts:
        raise ValueError("opts apply to a config path; apply them to a loaded config with load_seg_config")
    names, palette = _class_meta(classes)
    if len(names) < 2:
        raise UserError(f"zero-shot segmentation needs at least two classes, got {names}")
    with_bg = names[0] == "background"
    prompted = names[1:] if with_bg else names
    tokens = build_dataset_class_tokens(text_transform or Tokenize(), template, prompted)  # [N, T, 77]
    text_embedding = model.build_text_embedding(tokens)  # [N, E]
    seg_model = GroupViTSegInference(model=model, text_embedding=text_embedding, with_bg=with_bg,
                                     test_cfg=seg_cfg.test_cfg, data_preprocessor=seg_cfg.data_preprocessor,
                                     classes=names, palette=palette, bg_threshs=bg_threshs,
                                     test_pipeline=seg_cfg.test_pipeline)
    return seg_model.to(text_embedding.device).eval()
