"""An evaluation model from an experiment config and a checkpoint (``main_seg.py``, the demos, the notebook)."""

from __future__ import annotations

import argparse
import copy
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from models import build_model
from utils.checkpoint import load_checkpoint, load_model_state
from utils.config import get_config, load_config
from utils.errors import UserError

# Only used by the multi-label training loss: tolerated when absent from the checkpoint or the model.
UNUSED_FOR_SEGMENTATION = "multi_label_logit_scale"

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CFG = ROOT / "configs" / "default.yml"  # the demos' config when none is given (model from the checkpoint)


def experiment_config(args: argparse.Namespace) -> DictConfig:
    """``get_config(args)``, with a clear error for a file that does not build on configs/default.yml."""
    missing = [key for key in ("checkpoint", "evaluate") if key not in load_config(args.cfg)]
    if missing:
        raise UserError(f"{args.cfg} is not an experiment config: it lacks the {' and '.join(missing)} section(s) "
                        "(build it on configs/default.yml with _base_, as configs/group_vit_gcc_yfcc_30e.yml does)")
    return get_config(args)


def with_model_config(cfg: DictConfig, ckpt: Mapping) -> DictConfig:
    """``cfg`` itself if it has a ``model`` section, else a copy with the checkpoint's (resolved) model config."""
    if "model" in cfg:
        return cfg
    stored = ckpt.get("config")
    if stored is None:
        raise UserError("the config has no 'model' section and the checkpoint stores no config: "
                        "give a --cfg with a model section (e.g. configs/group_vit_gcc_yfcc_30e.yml)")
    stored = stored if isinstance(stored, DictConfig) else OmegaConf.create(dict(stored))
    if "model" not in stored:
        raise UserError("the config has no 'model' section and neither has the checkpoint's stored config")
    model_cfg = OmegaConf.to_container(stored.model, resolve=True)
    cfg = copy.deepcopy(cfg)
    with read_write(cfg), open_dict(cfg):
        cfg.model = model_cfg
    return cfg


def load_eval_state(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Strict loading, except that ``multi_label_logit_scale`` may be missing or unexpected."""
    prefix = "module." if state_dict and all(k.startswith("module.") for k in state_dict) else ""
    key, own = prefix + UNUSED_FOR_SEGMENTATION, model.state_dict()
    fitted = OrderedDict((k, v) for k, v in state_dict.items() if k != key or UNUSED_FOR_SEGMENTATION in own)
    if UNUSED_FOR_SEGMENTATION in own and key not in fitted:
        fitted[key] = own[UNUSED_FOR_SEGMENTATION]
    if hasattr(state_dict, "_metadata"):
        fitted._metadata = state_dict._metadata
    load_model_state(model, fitted, strict=True)


def load_eval_model(cfg: DictConfig, checkpoint: str, device: torch.device) -> tuple[torch.nn.Module, DictConfig]:
    """Build the model (from ``cfg.model``, else the checkpoint's config), load the weights; eval mode on ``device``.

    Returns the model and the config that describes it.
    """
    model, cfg, _ = load_eval_checkpoint(cfg, checkpoint, device)
    return model, cfg


def load_eval_checkpoint(cfg: DictConfig, checkpoint: str, device: torch.device
                         ) -> tuple[torch.nn.Module, DictConfig, Mapping | None]:
    """:func:`load_eval_model`, and the config stored in the checkpoint (None if it has none)."""
    if not checkpoint:
        raise UserError("no checkpoint to evaluate: give --resume PATH_OR_URL")
    ckpt = load_checkpoint(checkpoint)
    cfg = with_model_config(cfg, ckpt)
    model = build_model(cfg.model)
    load_eval_state(model, ckpt["model"])
    return model.to(device).eval(), cfg, ckpt.get("config")
