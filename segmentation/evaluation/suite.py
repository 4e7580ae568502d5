"""The zero-shot segmentation benchmark suite: the eight datasets of the literature's tables, one model, one report.

``run_suite`` evaluates one loaded model on each dataset (``evaluate_seg`` per dataset, so every number equals a
single-dataset run), after checking that every dataset is there; ``SuiteResults`` writes ``suite_results.json`` and
``suite_results.md`` (one row per dataset, the mean over the eight, a per-class IoU table per dataset).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict, read_write

from utils.atomic_files import write_atomic
from utils.errors import UserError
from utils.logger import get_logger

from .builder import build_seg_dataset
from .miou import SegResults, evaluate_seg, load_eval_seg_config

DATASET_CFGS = Path(__file__).resolve().parents[1] / "configs" / "_base_" / "datasets"
# name -> dataset config, in the order of the tables of TCL, SCLIP and their successors (with background first)
SUITE_RESULTS = ("suite_results.json", "suite_results.md")  # what SuiteResults.write writes
SUITE = {
    "voc21": "pascal_voc12.py",
    "context60": "pascal_context.py",
    "coco_object": "coco.py",
    "voc20": "pascal_voc12_20.py",
    "context59": "pascal_context_59.py",
    "coco_stuff": "coco_stuff.py",
    "cityscapes": "cityscapes.py",
    "ade20k": "ade20k.py",
}


def parse_suite(text: str) -> list[str]:
    """``all`` or a comma list of suite names -> the names, in the order given (repeats dropped)."""
    if text.strip() == "all":
        return list(SUITE)
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in SUITE]
    if unknown or not names:
        raise UserError(f"unknown --suite dataset(s) {', '.join(unknown) or repr(text)}; valid: all or a comma list "
                        f"of {', '.join(SUITE)}")
    return names


def dataset_config(cfg: DictConfig, name: str) -> DictConfig:
    """A copy of ``cfg`` whose ``evaluate.seg.cfg`` is the suite dataset ``name``'s config."""
    cfg = copy.deepcopy(cfg)
    with read_write(cfg), open_dict(cfg):
        cfg.evaluate.seg.cfg = str(DATASET_CFGS / SUITE[name])
    return cfg


@dataclass
class SuiteResults:
    """Per dataset its results (in suite order); ``missing``: skipped datasets with the reason."""

    checkpoint: str
    protocol: str
    results: dict[str, SegResults] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def mean_miou(self) -> float:
        """The mean mIoU over the evaluated datasets (NaN if none)."""
        values = [r.miou for r in self.results.values()]
        return round(sum(values) / len(values), 2) if values else math.nan

    def mean_label(self) -> str:
        return f"mean over {'the eight' if len(self.results) == len(SUITE) else len(self.results)}"

    def thresholds(self) -> list[float]:
        """The swept background thresholds (empty without a sweep)."""
        return next(([r.bg_thresh for r in res.sweep] for res in self.results.values() if res.sweep), [])

    def to_json(self) -> dict:
        return {"checkpoint": self.checkpoint, "protocol": self.protocol,
                "mean": {"mIoU": self.mean_miou(), "datasets": len(self.results), "of": len(SUITE)},
                "datasets": {name: {"config": SUITE[name], **r.to_json()} for name, r in self.results.items()},
                "missing": self.missing}

    def to_markdown(self) -> str:
        def num(x: float | None) -> str:
            return "n/a" if x is None or math.isnan(x) else f"{x:.2f}"

        lines = [f"# Zero-shot segmentation suite: {self.checkpoint}", "",
                 f"Protocol `{self.protocol}`; metrics in percent (mmseg's IoUMetric, ignore index 255).", "",
                 "| dataset | classes | images | protocol | bg_thresh | mIoU | mAcc | aAcc |",
                 "|---|---|---|---|---|---|---|---|"]
        for name, r in self.results.items():
            bg = "none" if r.bg_thresh is None else f"{r.bg_thresh:g}"
            lines.append(f"| {name} | {len(r.classes)} | {r.num_images} | {r.protocol} | {bg} | {num(r.miou)} | "
                         f"{num(r.macc)} | {num(r.aacc)} |")
        lines.append(f"| **{self.mean_label()}** | | | | | **{num(self.mean_miou())}** | | |")
        if self.missing:
            lines += ["", "Skipped (missing): " + "; ".join(f"{n} ({why})" for n, why in self.missing.items())]
        thresholds = self.thresholds()
        if thresholds:
            lines += ["", "## mIoU per background threshold (datasets with background; one forward per image)", "",
                      "| dataset | " + " | ".join(f"{t:g}" for t in thresholds) + " |",
                      "|---|" + "---|" * len(thresholds)]
            for name, r in self.results.items():
                if r.sweep:
                    lines.append(f"| {name} | " + " | ".join(num(s.miou) for s in r.sweep) + " |")
        for name, r in self.results.items():
            lines += ["", f"## {name}: per-class IoU", "", "| class | IoU | Acc |", "|---|---|---|"]
            lines += [f"| {c} | {num(iou)} | {num(acc)} |" for c, iou, acc in zip(r.classes, r.iou, r.acc, strict=True)]
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> tuple[Path, Path]:
        json_path, md_path = (folder / name for name in SUITE_RESULTS)
        write_atomic(json_path, json.dumps(self.to_json(), indent=2))
        write_atomic(md_path, self.to_markdown())
        return json_path, md_path


def check_suite(cfg: DictConfig, names: Sequence[str], skip_missing: bool,
                logger: logging.Logger) -> tuple[list[str], dict[str, str], set[str]]:
    """Before anything runs: which datasets are there. Returns the present names, the missing ones with the
    reason (each also logged on one line) and the names of the datasets with a background class. A missing
    dataset is a UserError unless ``skip_missing``; so is nothing left to evaluate."""
    present, missing, with_bg = [], {}, set()
    for name in names:
        try:
            seg_cfg, _ = load_eval_seg_config(dataset_config(cfg, name).evaluate.seg)
            dataset = build_seg_dataset(seg_cfg)
        except UserError as e:
            missing[name] = str(e)
            logger.warning("%s: %s", name, e)
            continue
        present.append(name)
        if dataset.metainfo["classes"][0] == "background":
            with_bg.add(name)
    if missing and not skip_missing:
        raise UserError(f"{len(missing)} suite dataset(s) missing: {', '.join(missing)} (see the lines above; "
                        "prepare them as in the README's Data preparation, or pass --skip-missing)")
    if not present:
        raise UserError(f"none of the suite datasets {', '.join(names)} is there")
    return present, missing, with_bg


def run_suite(cfg: DictConfig, model: torch.nn.Module, names: Sequence[str], logger: logging.Logger | None = None,
              skip_missing: bool = False, bg_threshs: Sequence[float] | None = None, vis_modes: Sequence[str] = (),
              vis_dir: Path | None = None) -> SuiteResults:
    """Evaluate ``model`` (loaded once) on each suite dataset ``names`` under ``cfg.evaluate.seg``'s protocol,
    short side and opts. ``bg_threshs`` apply to the datasets with background; the others have no threshold.
    Visualisations go to ``<vis_dir>/<dataset>/<mode>/``."""
    logger = logger or get_logger()
    present, missing, with_bg = check_suite(cfg, names, skip_missing, logger)
    suite = SuiteResults(checkpoint=str(cfg.checkpoint.resume), protocol=cfg.evaluate.seg.get("protocol", "groupvit"),
                         missing=missing)
    for i, name in enumerate(present, start=1):
        logger.info("suite dataset %d/%d: %s (%s)", i, len(present), name, SUITE[name])
        suite.results[name] = evaluate_seg(dataset_config(cfg, name), model, logger, vis_modes,
                                           None if vis_dir is None else vis_dir / name,
                                           bg_threshs if name in with_bg else None)
    logger.info("suite: %s mIoU %.2f", suite.mean_label(), suite.mean_miou())
    return suite
