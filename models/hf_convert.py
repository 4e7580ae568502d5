"""Convert between the reference GroupViT layout (ours, = the official checkpoints) and Hugging Face's GroupViTModel.

State dicts (spec 4.3): the fused vision ``attn.qkv`` and text ``attn.in_proj_*`` are split row-wise into HF's
``q_proj``/``k_proj``/``v_proj`` (and concatenated back), the projector Conv1d weights [out, in, 1] become Linear
weights [out, in] (HF ``*_projection.{0,1,3}``), ``multi_label_logit_scale`` has no HF counterpart, and HF's
``text_model.embeddings.position_ids`` buffer is not a weight. Configs: our ``model:`` section <->
``transformers.GroupViTConfig``. transformers is imported only inside the config functions (test-only dependency).
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from utils.errors import UserError

from .group_vit import GroupViT
from .multi_label_contrastive import MultiLabelContrastive
from .transformer import TextTransformer

if TYPE_CHECKING:
    from transformers import GroupViTConfig

HF_POSITION_IDS = "text_model.embeddings.position_ids"
_FUSED, _CONV = "fused", "conv"  # rule kinds: q|k|v stacked in one tensor; Conv1d(k=1) <-> Linear weight

# (reference name, HF name, kind). {i}/{j} are indices, {p} the rest of the name, {x} one of q/k/v.
# The first rule that matches wins, so specific rules come before general ones.
_S, _VS = "img_encoder.layers.{i}", "vision_model.encoder.stages.{i}"
_T, _HT = "text_encoder.transformer.resblocks.{i}", "text_model.encoder.layers.{i}"
_RULES: list[tuple[str, str, str]] = [
    ("logit_scale", "logit_scale", ""),
    ("img_encoder.pos_embed", "vision_model.embeddings.position_embeddings", ""),
    ("img_encoder.patch_embed.proj.{p}", "vision_model.embeddings.patch_embeddings.projection.{p}", ""),
    ("img_encoder.patch_embed.norm.{p}", "vision_model.embeddings.layernorm.{p}", ""),
    (f"{_S}.group_token", f"{_VS}.group_token", ""),
    (f"{_S}.blocks.{{j}}.norm1.{{p}}", f"{_VS}.layers.{{j}}.layer_norm1.{{p}}", ""),
    (f"{_S}.blocks.{{j}}.norm2.{{p}}", f"{_VS}.layers.{{j}}.layer_norm2.{{p}}", ""),
    (f"{_S}.blocks.{{j}}.attn.qkv.{{p}}", f"{_VS}.layers.{{j}}.self_attn.{{x}}_proj.{{p}}", _FUSED),
    (f"{_S}.blocks.{{j}}.attn.proj.{{p}}", f"{_VS}.layers.{{j}}.self_attn.out_proj.{{p}}", ""),
    (f"{_S}.blocks.{{j}}.mlp.{{p}}", f"{_VS}.layers.{{j}}.mlp.{{p}}", ""),
    (f"{_S}.downsample.pre_assign_attn.attn.proj.{{p}}", f"{_VS}.downsample.pre_assign_attn.attn.out_proj.{{p}}", ""),
    (f"{_S}.downsample.{{p}}", f"{_VS}.downsample.{{p}}", ""),
    (f"{_S}.group_projector.{{p}}", f"{_VS}.group_projector.{{p}}", ""),
    ("img_encoder.norm.{p}", "vision_model.layernorm.{p}", ""),
    ("text_encoder.positional_embedding", "text_model.embeddings.position_embedding.weight", ""),
    (f"{_T}.attn.in_proj_{{p}}", f"{_HT}.self_attn.{{x}}_proj.{{p}}", _FUSED),
    (f"{_T}.attn.out_proj.{{p}}", f"{_HT}.self_attn.out_proj.{{p}}", ""),
    (f"{_T}.ln_1.{{p}}", f"{_HT}.layer_norm1.{{p}}", ""),
    (f"{_T}.ln_2.{{p}}", f"{_HT}.layer_norm2.{{p}}", ""),
    (f"{_T}.mlp.c_fc.{{p}}", f"{_HT}.mlp.fc1.{{p}}", ""),
    (f"{_T}.mlp.c_proj.{{p}}", f"{_HT}.mlp.fc2.{{p}}", ""),
    ("text_encoder.ln_final.{p}", "text_model.final_layer_norm.{p}", ""),
    ("text_encoder.token_embedding.weight", "text_model.embeddings.token_embedding.weight", ""),
]
for _ours, _theirs in (("img", "visual"), ("text", "text")):
    _RULES += [
        (f"{_ours}_projector.linear_hidden.0.{{p}}", f"{_theirs}_projection.0.{{p}}", _CONV),
        (f"{_ours}_projector.linear_hidden.1.{{p}}", f"{_theirs}_projection.1.{{p}}", ""),
        (f"{_ours}_projector.linear_out.{{p}}", f"{_theirs}_projection.3.{{p}}", _CONV),
    ]

# Every name of the reference layout, in an order that agrees with the module registration order among
# siblings wherever they meet (e.g. norm1 < attn < norm2 < mlp, attn < ln_1 < mlp < ln_2), so sorting the
# dotted names component by component reproduces model.state_dict() order.
_ORDER = {name: rank for rank, name in enumerate("""
    logit_scale multi_label_logit_scale img_encoder text_encoder img_projector text_projector
    pos_embed patch_embed layers group_token blocks downsample group_projector
    norm_tokens mlp_inter norm_post_tokens norm_x pre_assign_attn assign norm_new_x mlp_channels
    norm_post norm1 attn ln_1 norm2 mlp ln_2 qkv q_proj k_proj v_proj proj norm
    positional_embedding transformer resblocks ln_final token_embedding in_proj_weight in_proj_bias out_proj
    fc1 fc2 c_fc c_proj linear_hidden linear_out weight bias running_mean running_var num_batches_tracked
    """.split())}


def _compile(pattern: str) -> re.Pattern[str]:
    groups = {"i": r"(?P<i>\d+)", "j": r"(?P<j>\d+)", "p": r"(?P<p>.+)", "x": r"(?P<x>[qkv])"}
    return re.compile(re.sub(r"\\\{(\w)\\\}", lambda m: groups[m.group(1)], re.escape(pattern)))


_COMPILED = [(_compile(ref), _compile(hf), ref, hf, kind) for ref, hf, kind in _RULES]


def _match(key: str, side: int) -> tuple[dict[str, str], str, str, str]:
    """(groups, reference pattern, HF pattern, kind) of the first rule matching key (side 0: reference, 1: HF)."""
    for rule in _COMPILED:
        m = rule[side].fullmatch(key)
        if m:
            return m.groupdict(), rule[2], rule[3], rule[4]
    layout = "reference (official GroupViT)" if side == 0 else "Hugging Face GroupViTModel"
    raise UserError(f"{key!r} is not a {layout} state-dict key")


def _order(key: str) -> tuple:
    return tuple((0, int(c), "") if c.isdigit() else (1, _ORDER.get(c, len(_ORDER)), c) for c in key.split("."))


def reference_to_hf(state_dict: Mapping[str, torch.Tensor], position_ids: bool = False) -> dict[str, torch.Tensor]:
    """Reference state dict -> HF GroupViTModel state dict (``multi_label_logit_scale`` is dropped).

    ``position_ids`` adds HF's ``text_model.embeddings.position_ids`` buffer (persistent in old transformers).
    """
    if state_dict and all(k.startswith("module.") for k in state_dict):  # saved from a DDP-wrapped model
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key == "multi_label_logit_scale":
            continue
        groups, _, hf, kind = _match(key, 0)
        if kind == _FUSED:
            if tensor.shape[0] % 3:
                raise UserError(f"{key}: {tuple(tensor.shape)} does not stack q, k and v")
            for x, part in zip("qkv", tensor.chunk(3), strict=True):
                out[hf.format(x=x, **groups)] = part.contiguous()
            continue
        if kind == _CONV and groups["p"] == "weight" and tensor.ndim == 3:
            tensor = tensor.squeeze(-1)
        out[hf.format(**groups)] = tensor.contiguous()
    if position_ids:
        out[HF_POSITION_IDS] = torch.arange(state_dict["text_encoder.positional_embedding"].shape[0])[None]
    return out


def hf_to_reference(state_dict: Mapping[str, torch.Tensor],
                    multi_label_logit_scale: torch.Tensor | float | None = None) -> dict[str, torch.Tensor]:
    """HF GroupViTModel state dict -> reference state dict, keys in the reference's order.

    ``multi_label_logit_scale`` (not in HF checkpoints) is added only when given.
    """
    parts: dict[str, dict[str, torch.Tensor]] = {}  # reference key -> {'' or 'q'/'k'/'v': tensor}
    for key, tensor in state_dict.items():
        if key == HF_POSITION_IDS:
            continue
        groups, ref, _, kind = _match(key, 1)
        if kind == _CONV and groups["p"] == "weight" and tensor.ndim == 2:
            tensor = tensor.unsqueeze(-1)
        slot = parts.setdefault(ref.format(**groups), {})
        part = groups.get("x", "")
        if part in slot:
            raise UserError(f"{key!r} and another key both map to {ref.format(**groups)!r}")
        slot[part] = tensor
    if multi_label_logit_scale is not None:
        parts["multi_label_logit_scale"] = {"": torch.as_tensor(multi_label_logit_scale, dtype=torch.float32)}

    out: dict[str, torch.Tensor] = {}
    for ref in sorted(parts, key=_order):
        slot = parts[ref]
        if set(slot) == {""}:
            out[ref] = slot[""].contiguous()
        elif set(slot) == set("qkv"):
            out[ref] = torch.cat([slot[x] for x in "qkv"]).contiguous()
        else:
            raise UserError(f"{ref!r}: the HF state dict has only the {'/'.join(sorted(slot))} part(s) of q/k/v")
    return out


# ------------------------------------------------------------------------------------------------ configs


def _section(cfg: Mapping[str, Any], cls: type, where: str) -> dict[str, Any]:
    """cfg (a model config section of type cls) with cls's defaults filled in."""
    if not isinstance(cfg, Mapping) or cfg.get("type") != cls.__name__:
        raise UserError(f"{where}: expected a {cls.__name__} section, got {cfg!r:.80}")
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(cfg) - set(params) - {"type"})
    if unknown:
        raise UserError(f"{where}: {cls.__name__} has no argument(s) {', '.join(unknown)}")
    values = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    return values | {k: v for k, v in cfg.items() if k != "type"}


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise UserError(f"Hugging Face's GroupViT cannot represent this model: {what}")


def hf_config_from_model_cfg(model_cfg: Mapping[str, Any] | DictConfig) -> GroupViTConfig:
    """Our ``model:`` config section -> ``transformers.GroupViTConfig`` (UserError if HF can't express it).

    Training-only settings (drop path, multi-label loss, gradient checkpointing) have no HF counterpart.
    """
    from transformers import GroupViTConfig

    if isinstance(model_cfg, DictConfig):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    top = _section(model_cfg, MultiLabelContrastive, "model")
    img = _section(top["img_encoder"], GroupViT, "model.img_encoder")
    txt = _section(top["text_encoder"], TextTransformer, "model.text_encoder")
    depths, tokens, outputs = list(img["depths"]), list(img["num_group_tokens"]), list(img["num_output_groups"])
    _require(top["proj_num_layers"] == 2, f"proj_num_layers {top['proj_num_layers']} (HF has 2-layer projections)")
    _require(len(set(img["num_heads"])) == 1, f"num_heads {list(img['num_heads'])} (HF has one head count)")
    _require(set(img["embed_factors"]) == {1}, f"embed_factors {list(img['embed_factors'])}")
    _require(img["mlp_ratio"] == 4.0, f"mlp_ratio {img['mlp_ratio']} (the grouping blocks' MLPs use 4)")
    _require(img["num_classes"] == 0, "a classification head (num_classes > 0)")
    _require(img["qkv_bias"] and img["qk_scale"] is None, "qkv_bias false or a custom qk_scale")
    _require(img["hard_assignment"] and img["patch_norm"], "soft assignment or no patch norm")
    for i in range(1, len(depths)):  # HF sizes the group projector by the previous stage's output groups
        _require(not tokens[i] or outputs[i - 1] == tokens[i - 1],
                 f"num_output_groups[{i - 1}] != num_group_tokens[{i - 1}] before a group projector")
    width = txt["width"]
    _require(width >= 64, f"text width {width} (heads = width // 64 must be at least 1)")
    return GroupViTConfig(
        text_config=dict(
            vocab_size=txt["vocab_size"], hidden_size=width, intermediate_size=int(width * txt["mlp_ratio"]),
            num_hidden_layers=txt["layers"], num_attention_heads=width // 64,
            max_position_embeddings=txt["context_length"], hidden_act="quick_gelu", layer_norm_eps=1e-5),
        vision_config=dict(
            hidden_size=img["embed_dim"], intermediate_size=int(img["embed_dim"] * 4.0),
            num_hidden_layers=sum(depths), depths=depths, num_group_tokens=tokens,
            num_output_groups=outputs + (outputs[-1:] or [0]),  # HF lists one per stage; the last one is unused
            num_attention_heads=img["num_heads"][0], image_size=img["img_size"], patch_size=img["patch_size"],
            num_channels=img["in_chans"], hidden_act="gelu", layer_norm_eps=1e-5,
            dropout=img["drop_rate"], attention_dropout=img["attn_drop_rate"], assign_eps=1.0,
            assign_mlp_ratio=[0.5, 4]),
        projection_dim=top["output_dim"], projection_intermediate_dim=4096,
        logit_scale_init_value=math.log(1 / top["contrast_temperature"]))


def _single(value: Any, what: str) -> int:
    """An int, or a pair of equal ints (HF allows non-square sizes)."""
    if isinstance(value, list | tuple):
        _require(len(set(value)) == 1, f"non-square {what} {list(value)}")
        value = value[0]
    return int(value)


def model_cfg_from_hf_config(config: GroupViTConfig, multi_label: int = 0) -> dict[str, Any]:
    """``transformers.GroupViTConfig`` -> our ``model:`` config section (UserError if we can't build it).

    ``multi_label`` (training only, not in HF's config) > 0 gives the model a ``multi_label_logit_scale``.
    """
    v, t = config.vision_config, config.text_config
    depths, tokens, outputs = list(v.depths), list(v.num_group_tokens), list(v.num_output_groups)
    _require(v.hidden_act == "gelu" and t.hidden_act == "quick_gelu",
             f"activations {v.hidden_act}/{t.hidden_act} (ours: gelu for vision, quick_gelu for text)")
    _require(math.isclose(v.layer_norm_eps, 1e-5) and math.isclose(t.layer_norm_eps, 1e-5),
             f"layer_norm_eps {v.layer_norm_eps}/{t.layer_norm_eps} (ours: 1e-5)")
    _require(config.projection_intermediate_dim == 4096,
             f"projection_intermediate_dim {config.projection_intermediate_dim} (ours: 4096)")
    _require(v.intermediate_size == 4 * v.hidden_size, f"vision intermediate_size {v.intermediate_size} != 4 x hidden")
    _require([float(r) for r in v.assign_mlp_ratio] == [0.5, 4.0] and v.assign_eps == 1.0,
             f"assign_mlp_ratio {list(v.assign_mlp_ratio)} / assign_eps {v.assign_eps} (ours: [0.5, 4] / 1.0)")
    _require(t.num_attention_heads == t.hidden_size // 64,
             f"{t.num_attention_heads} text heads (ours: hidden_size // 64 = {t.hidden_size // 64})")
    mlp_ratio = t.intermediate_size / t.hidden_size
    _require(int(t.hidden_size * mlp_ratio) == t.intermediate_size, f"text intermediate_size {t.intermediate_size}")
    _require(len(tokens) == len(depths) == len(outputs) and tokens[-1] == 0,
             "depths, num_group_tokens and num_output_groups need one entry per stage, the last without groups")
    for i in range(1, len(depths)):
        _require(not tokens[i] or outputs[i - 1] == tokens[i - 1],
                 f"num_output_groups[{i - 1}] != num_group_tokens[{i - 1}] before a group projector")
    return {
        "type": "MultiLabelContrastive",
        "img_encoder": {
            "type": "GroupViT", "img_size": _single(v.image_size, "image_size"),
            "patch_size": _single(v.patch_size, "patch_size"), "in_chans": v.num_channels,
            "embed_dim": v.hidden_size, "num_heads": [v.num_attention_heads] * len(depths), "depths": depths,
            "num_group_tokens": tokens, "num_output_groups": outputs[:-1],
            "drop_rate": float(v.dropout), "attn_drop_rate": float(v.attention_dropout),
            "drop_path_rate": 0.1,  # not in HF's config; the official value (training only)
        },
        "text_encoder": {
            "type": "TextTransformer", "context_length": t.max_position_embeddings, "width": t.hidden_size,
            "layers": t.num_hidden_layers, "vocab_size": t.vocab_size, "mlp_ratio": mlp_ratio,
        },
        "contrast_temperature": float(f"{math.exp(-config.logit_scale_init_value):.6g}"),
        "proj_num_layers": 2,
        "output_dim": config.projection_dim,
        "multi_label": multi_label,
    }
