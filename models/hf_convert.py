"""Convert between the reference GroupViT layout (ours, = the official checkpoints) and Hugging Face's GroupViTModel.

State dicts: the fused vision ``attn.qkv`` and text ``attn.in_proj_*`` are split row-wise into HF's
``q_proj``/``k_proj``/``v_proj`` (and concatenated back), the projector Conv1d weights [out, in, 1] become Linear
weights [out, in] (HF ``*_projection.{0,1,3}``), and HF's ``text_model.embeddings.position_ids`` buffer is not a
weight. ``multi_label_logit_scale`` has no HF counterpart: a folder we write keeps it (and ``multi_label``) in
config.json under ``multi_label_loss``, an entry transformers carries along unread. Configs: our ``model:`` section
<-> ``transformers.GroupViTConfig``.

Folders: ``load_hf_checkpoint`` reads a transformers GroupViT folder (config.json + model.safetensors or
pytorch_model.bin) or a Hub id as one of our checkpoints, in memory (``utils.checkpoint.load_checkpoint`` calls it,
so every ``--resume`` takes them); ``save_hf_folder`` writes a complete folder (model, CLIP tokenizer derived from
our BPE vocabulary, image processor = our evaluation preprocessing) that ``GroupViTModel.from_pretrained`` and
``AutoProcessor.from_pretrained`` load; ``from_transformers`` turns a loaded ``GroupViTModel`` into ours.
transformers is imported inside the functions that need it.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from utils.errors import UserError, one_line
from utils.overwrite import refuse_to_overwrite, replacing
from utils.safe_unpickle import load_weights_only

from .builder import build_model
from .group_vit import GroupViT
from .multi_label_contrastive import MultiLabelContrastive
from .transformer import TextTransformer

if TYPE_CHECKING:
    from transformers import GroupViTConfig, GroupViTModel

HF_POSITION_IDS = "text_model.embeddings.position_ids"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # the weight files of a folder, in order of preference
MULTI_LABEL_LOSS = "multi_label_loss"  # config.json entry: {"multi_label": int, "logit_scale": float}
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


def _temperature(logit_scale_init: float) -> float:
    """contrast_temperature T from HF's logit_scale_init_value ln(1/T), which HF's default gives to 4 decimals
    (2.6592 for 0.07): the shortest decimal whose ln(1/T) is within 1e-4 of it."""
    for digits in range(1, 7):
        temperature = float(f"{math.exp(-logit_scale_init):.{digits}g}")
        if abs(math.log(1 / temperature) - logit_scale_init) <= 1e-4:
            return temperature
    return float(f"{math.exp(-logit_scale_init):.6g}")


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
        "contrast_temperature": _temperature(config.logit_scale_init_value),
        "proj_num_layers": 2,
        "output_dim": config.projection_dim,
        "multi_label": multi_label,
    }


# ------------------------------------------------------------------------------------------------ folders

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".tar")


def is_hf_folder(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.json").is_file()


def is_hub_id(name: str) -> bool:
    """'owner/name' that is no local path and does not look like a checkpoint file (e.g. nvidia/groupvit-gcc-yfcc).
    A name whose first part is a local folder (output/run1 beside output/) is a path."""
    return (bool(_HUB_ID.fullmatch(name)) and not name.endswith(_CHECKPOINT_SUFFIXES) and not os.path.exists(name)
            and not os.path.isdir(name.split("/")[0]))


def hub_folder(repo_id: str) -> Path:
    """The Hub model's config.json and weights in the standard Hugging Face cache (downloaded once, when online;
    HF_HUB_OFFLINE=1 uses the cache only). Returns the snapshot folder."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError

    try:
        if not constants.HF_HUB_OFFLINE and not isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
            # one request first: hf_hub_download retries an unreachable Hub for about 25 s
            get_hf_file_metadata(hf_hub_url(repo_id, "config.json"))
        folder = Path(hf_hub_download(repo_id, "config.json")).parent
        for name in HF_WEIGHTS:  # the first one the repository (or, offline, the cache) has
            try:
                hf_hub_download(repo_id, name)
                break
            except EntryNotFoundError:
                continue
    except Exception as e:  # offline without a cached copy, unknown repository, network errors, ...
        raise UserError(f"checkpoint {repo_id!r} is no local file or folder, and loading it from the Hugging Face "
                        f"Hub failed ({type(e).__name__}: {one_line(e, limit=200)})") from None
    return folder


def read_hf_config(folder: str | os.PathLike) -> GroupViTConfig:
    """config.json of a folder as a GroupViTConfig (one-line UserError when it is not one)."""
    from transformers import GroupViTConfig

    path = Path(folder) / "config.json"
    try:
        model_type = json.loads(path.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as e:
        raise UserError(f"{path} is not a readable JSON config ({one_line(e, limit=200)})") from None
    if model_type != "groupvit":
        raise UserError(f"{path} describes a {model_type!r} model, not a GroupViT (model_type 'groupvit')")
    try:
        return GroupViTConfig.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # transformers validates the values (types, ranges) with several error types
        raise UserError(f"{path} is not a valid GroupViT config ({one_line(e, limit=200)})") from None


def read_hf_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in model.safetensors (else pytorch_model.bin, read with the weights-only unpickler)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    path = next((folder / name for name in HF_WEIGHTS if (folder / name).is_file()), None)
    if path is None:
        raise UserError(f"{folder} has config.json but no weights: expected {' or '.join(HF_WEIGHTS)}")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError) as e:
            raise UserError(f"could not read {path} ({one_line(e, limit=200)})") from None
    state = load_weights_only(str(path))
    if not isinstance(state, Mapping):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state dict")
    return dict(state)


def _meta_hf_model(config: GroupViTConfig) -> GroupViTModel:
    """transformers' GroupViTModel for config on the meta device (shapes without memory or init time)."""
    from transformers import GroupViTModel

    with torch.device("meta"):
        return GroupViTModel(config)


def check_hf_state(state: Mapping[str, torch.Tensor], config: GroupViTConfig, where: str) -> None:
    """One-line UserError unless state holds exactly the weights (names and shapes) of GroupViTModel(config)."""
    expected = {k: list(v.shape) for k, v in _meta_hf_model(config).state_dict().items() if k != HF_POSITION_IDS}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected and k != HF_POSITION_IDS]
    other = [k for k in expected if k in state and list(state[k].shape) != expected[k]]
    if other:
        k = other[0]
        raise UserError(f"{where}: config.json does not match the weights: {len(other)} of them have other sizes, "
                        f"e.g. {k} is {list(state[k].shape)} in the file but {expected[k]} by config.json")
    if missing:
        raise UserError(f"{where}: {len(missing)} of the {len(expected)} GroupViTModel weights are missing, "
                        f"e.g. {', '.join(missing[:3])}")
    if unexpected:
        raise UserError(f"{where}: {len(unexpected)} weights are not GroupViTModel's, e.g. {', '.join(unexpected[:3])}")


def _multi_label_loss(config: GroupViTConfig) -> dict[str, Any]:
    extra = getattr(config, MULTI_LABEL_LOSS, None)
    return dict(extra) if isinstance(extra, Mapping) else {}


def load_hf_checkpoint(folder_or_hub_id: str | os.PathLike) -> dict[str, Any]:
    """A transformers GroupViT folder (or Hub id) as our checkpoint: {'model': reference state dict, 'config':
    {'model': model section from config.json}}, converted in memory. Mistakes are one-line UserErrors."""
    if importlib.util.find_spec("transformers") is None:
        raise UserError(f"{folder_or_hub_id} is a Hugging Face model: reading it needs transformers "
                        "(pip install -r requirements.txt)")
    folder = Path(folder_or_hub_id)
    if folder.exists():
        if not is_hf_folder(folder):
            raise UserError(f"{folder} is not a Hugging Face model folder (it has no config.json)")
    elif is_hub_id(str(folder_or_hub_id)):
        folder = hub_folder(str(folder_or_hub_id))
    else:
        raise UserError(f"checkpoint not found: {folder_or_hub_id} (no such folder, and not a Hub id owner/name)")
    config = read_hf_config(folder)
    state = read_hf_weights(folder)
    check_hf_state(state, config, str(folder_or_hub_id))
    extra = _multi_label_loss(config)
    model_cfg = model_cfg_from_hf_config(config, multi_label=int(extra.get("multi_label", 0)))
    return {"model": hf_to_reference(state, multi_label_logit_scale=extra.get("logit_scale")),
            "config": {"model": model_cfg}}


def hf_tokenizer(bpe_path: str | os.PathLike | None = None):
    """transformers' CLIPTokenizer with the vocabulary and merges of our CLIP BPE file (datasets/tokenizer.py).

    It gives our ids for ordinary text; unlike ours it does not run ftfy or unescape HTML entities.
    """
    from transformers import CLIPTokenizer

    from datasets.tokenizer import CONTEXT_LENGTH, SimpleTokenizer

    bpe = SimpleTokenizer(bpe_path)
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    return CLIPTokenizer(vocab=bpe.encoder, merges=merges, model_max_length=CONTEXT_LENGTH)


def hf_image_processor(img_aug: Mapping[str, Any]):
    """CLIPImageProcessor doing our evaluation preprocessing (datasets.builder.build_img_transform(False, ...)):
    resize the short side to int(256 / 224 * img_size), center crop img_size, ImageNet mean/std."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from transformers import CLIPImageProcessor

    resample = {"bilinear": 2, "bicubic": 3, "nearest": 0}  # PIL's codes
    interpolation = str(img_aug.get("interpolation", "bilinear"))
    if interpolation not in resample:
        raise UserError(f"data.img_aug.interpolation {interpolation!r} has no PIL equivalent for the image processor")
    size = int(img_aug.get("img_size", 224))
    return CLIPImageProcessor(size={"shortest_edge": int(256 / 224 * size)}, crop_size={"height": size, "width": size},
                              resample=resample[interpolation], image_mean=list(IMAGENET_DEFAULT_MEAN),
                              image_std=list(IMAGENET_DEFAULT_STD), do_convert_rgb=True)


def save_hf_folder(state: Mapping[str, torch.Tensor], model_cfg: Mapping[str, Any] | DictConfig,
                   folder: str | os.PathLike, img_aug: Mapping[str, Any] | None = None, replace: bool = False) -> None:
    """Write a complete transformers model folder: config.json (with ``multi_label_loss`` when the model has a
    multi-label scale), model.safetensors, the CLIP tokenizer and the image processor (``img_aug``: our
    ``data.img_aug``, default 224 pixels bilinear). Written beside ``folder`` and renamed into place, so a failure
    leaves nothing behind; an existing non-empty folder is refused, or with ``replace`` replaced once the new one
    is complete. The files get the modes the umask gives new files (as config.json's)."""
    from safetensors.torch import save_file
    from transformers import CLIPProcessor

    folder = Path(folder)
    if not replace:
        refuse_to_overwrite([folder], "a model folder", overwrite=False)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder} exists and is not a folder: choose a new output folder")
    if isinstance(model_cfg, DictConfig):
        model_cfg = OmegaConf.to_container(model_cfg, resolve=True)
    config = hf_config_from_model_cfg(model_cfg)
    config.architectures = ["GroupViTModel"]
    if "multi_label_logit_scale" in state:
        setattr(config, MULTI_LABEL_LOSS, {"multi_label": int(model_cfg.get("multi_label", 0)),
                                           "logit_scale": float(state["multi_label_logit_scale"])})
    hf_state = reference_to_hf(state)
    check_hf_state(hf_state, config, "the converted checkpoint")
    processor = CLIPProcessor(image_processor=hf_image_processor(img_aug or {}), tokenizer=hf_tokenizer())

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's folders are private
        config.save_pretrained(tmp)
        save_file({k: v.contiguous() for k, v in hf_state.items()}, tmp / HF_WEIGHTS[0], metadata={"format": "pt"})
        processor.save_pretrained(tmp)
        for file in tmp.iterdir():  # safetensors writes its file private
            file.chmod(0o666 & ~umask)
        with replacing([folder]):
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def from_transformers(hf_model: GroupViTModel) -> MultiLabelContrastive:
    """Our model (eval mode, on hf_model's device) with the weights of a transformers GroupViTModel."""
    extra = _multi_label_loss(hf_model.config)
    model = build_model(model_cfg_from_hf_config(hf_model.config, multi_label=int(extra.get("multi_label", 0))))
    state = hf_to_reference(hf_model.state_dict(), multi_label_logit_scale=extra.get("logit_scale"))
    model.load_state_dict(state)  # strict: every key of our model, each shape
    return model.to(next(hf_model.parameters()).device).eval()
