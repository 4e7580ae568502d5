"""Convert GroupViT checkpoints between our (= the official) layout and a Hugging Face GroupViTModel folder.

    python tools/convert_hf_checkpoint.py --to-hf CKPT.pth OUT_DIR [--cfg CONFIG.yml]
    python tools/convert_hf_checkpoint.py --from-hf HF_DIR_OR_HUB_ID OUT.pth [--cfg CONFIG.yml]

--to-hf takes the model config (and ``data.img_aug`` for the image processor) from the checkpoint's 'config'
unless --cfg is given, and writes a complete transformers folder: config.json, model.safetensors, the CLIP
tokenizer and the image processor (``GroupViTModel.from_pretrained`` and ``AutoProcessor.from_pretrained`` load
it). ``multi_label_logit_scale`` is kept in config.json. --from-hf derives the model config from config.json;
with --cfg the model section of that config is used instead (it must describe the same architecture), and the
whole config is stored in the output. A folder works offline; a Hub id (e.g. nvidia/groupvit-gcc-yfcc) is
downloaded once into the Hugging Face cache. Every --resume takes such folders and Hub ids directly; this tool is
for writing files. An existing output (a non-empty folder, a file) is refused unless --overwrite is given; then it is
replaced once the new one is complete. Mistakes give one line and exit code 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/ is not a package

from utils.cli import add_debug_flag, run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.overwrite import add_overwrite_flag, refuse_to_overwrite  # noqa: E402

MAX_LOGIT_SCALE = math.log(100)  # the reference clamps exp(logit_scale) at 100; HF does not
DEFAULT_CFG = Path(__file__).resolve().parents[1] / "configs" / "default.yml"


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def model_cfg_of(ckpt: dict, cfg_path: str | None) -> dict[str, Any]:
    """The resolved model section of --cfg, else of the checkpoint's own config."""
    from omegaconf import DictConfig, OmegaConf

    from utils.config import cfg_to_dict, load_config

    if cfg_path:
        return cfg_to_dict(load_config(cfg_path))["model"]
    config = ckpt.get("config")
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise UserError("the checkpoint has no config with a 'model' section; pass --cfg")
    return config["model"]


def img_aug_of(ckpt: dict, cfg_path: str | None) -> dict[str, Any]:
    """data.img_aug of --cfg, else of the checkpoint's config, else of configs/default.yml."""
    from omegaconf import DictConfig, OmegaConf

    from utils.config import cfg_to_dict, load_config

    config = ckpt.get("config") if not cfg_path else None
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    if not isinstance(config, dict) or "img_aug" not in config.get("data", {}):
        config = cfg_to_dict(load_config(cfg_path or DEFAULT_CFG))
    return config["data"]["img_aug"]


def to_hf(src: str, dst: str, cfg_path: str | None, overwrite: bool) -> None:
    from models.hf_convert import save_hf_folder
    from utils.checkpoint import load_checkpoint

    refuse_to_overwrite([dst], "a model folder", overwrite)
    ckpt = load_checkpoint(src)
    save_hf_folder(ckpt["model"], model_cfg_of(ckpt, cfg_path), dst, img_aug=img_aug_of(ckpt, cfg_path),
                   replace=overwrite)
    scale = float(ckpt["model"]["logit_scale"])
    if scale > MAX_LOGIT_SCALE:
        note(f"logit_scale {scale:.4f} > ln(100): HF does not clamp exp(logit_scale) at 100, "
             "so its logits will differ from ours")
    print(f"wrote Hugging Face model folder {dst}")


def architecture(config: Any) -> dict[str, Any]:
    """The fields of a GroupViTConfig that decide the weights' meaning (for comparing with --cfg)."""
    v, t = config.vision_config, config.text_config
    fields = {f"vision.{k}": getattr(v, k) for k in (
        "hidden_size", "intermediate_size", "depths", "num_group_tokens", "num_attention_heads", "image_size",
        "patch_size", "num_channels", "hidden_act", "assign_eps", "assign_mlp_ratio")}
    fields |= {f"text.{k}": getattr(t, k) for k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
        "max_position_embeddings", "hidden_act")}
    fields["vision.num_output_groups"] = list(v.num_output_groups)[:-1]
    fields |= {k: getattr(config, k) for k in ("projection_dim", "projection_intermediate_dim")}
    return {k: list(x) if isinstance(x, tuple) else x for k, x in fields.items()}


def from_hf(src: str, dst: str, cfg_path: str | None, overwrite: bool) -> None:
    import torch

    from models import build_model
    from models.hf_convert import hf_config_from_model_cfg, load_hf_checkpoint
    from utils.checkpoint import load_model_state, save_checkpoint
    from utils.config import cfg_to_dict, load_config

    refuse_to_overwrite([dst], "a checkpoint", overwrite)
    ckpt = load_hf_checkpoint(src)
    state, model_cfg = ckpt["model"], ckpt["config"]["model"]
    full_cfg = cfg_to_dict(load_config(cfg_path)) if cfg_path else None
    if full_cfg is not None:
        ours, theirs = (architecture(hf_config_from_model_cfg(c)) for c in (full_cfg["model"], model_cfg))
        diff = [f"{k} {ours[k]} vs {theirs[k]}" for k in ours if ours[k] != theirs[k]]
        if diff:
            raise UserError(f"--cfg {cfg_path} does not describe the HF model: {'; '.join(diff)}")
        model_cfg = full_cfg["model"]
    model = build_model(model_cfg)
    if "multi_label_logit_scale" in model.state_dict() and "multi_label_logit_scale" not in state:
        state["multi_label_logit_scale"] = torch.tensor(math.log(1 / model_cfg.get("contrast_temperature", 0.07)))
        note(f"{src} has no multi_label_logit_scale; set to its initial value "
             f"{float(state['multi_label_logit_scale']):.6f}")
    elif "multi_label_logit_scale" in state and "multi_label_logit_scale" not in model.state_dict():
        del state["multi_label_logit_scale"]
        note("multi_label_logit_scale dropped: the --cfg model has no multi-label loss")
    state = {k: state[k] for k in model.state_dict()}  # the reference's order
    load_model_state(model, state, strict=True)  # checks keys and shapes
    if float(state["logit_scale"]) > MAX_LOGIT_SCALE:
        note("logit_scale > ln(100): we clamp exp(logit_scale) at 100 as the reference does, HF does not")
    save_checkpoint({"model": state, "config": full_cfg or {"model": model_cfg}}, dst)
    print(f"wrote checkpoint to {dst}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to-hf", nargs=2, metavar=("CKPT", "OUT_DIR"), help="our .pth -> HF model folder")
    direction.add_argument("--from-hf", nargs=2, metavar=("HF_DIR", "OUT_PTH"),
                           help="HF model folder or Hub id -> our .pth")
    parser.add_argument("--cfg", help="experiment config (.yml) whose model section to use")
    add_overwrite_flag(parser, "the output file or folder")
    add_debug_flag(parser)
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # our own messages report what matters
    if args.to_hf:
        to_hf(*args.to_hf, args.cfg, args.overwrite)
    else:
        from_hf(*args.from_hf, args.cfg, args.overwrite)


if __name__ == "__main__":
    run_cli(main)
