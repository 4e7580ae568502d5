"""The full-size configs build models whose state_dict equals the released checkpoints' (key by key, with shapes)."""

import pytest
import torch

from models import build_model
from utils.config import load_config

C, T, HIDDEN, OUT = 384, 256, 4096, 256


def _block(prefix: str, dim: int) -> list[tuple[str, tuple]]:
    return [(f"{prefix}.norm1.weight", (dim,)), (f"{prefix}.norm1.bias", (dim,)),
            (f"{prefix}.attn.qkv.weight", (3 * dim, dim)), (f"{prefix}.attn.qkv.bias", (3 * dim,)),
            (f"{prefix}.attn.proj.weight", (dim, dim)), (f"{prefix}.attn.proj.bias", (dim,)),
            (f"{prefix}.norm2.weight", (dim,)), (f"{prefix}.norm2.bias", (dim,)),
            (f"{prefix}.mlp.fc1.weight", (4 * dim, dim)), (f"{prefix}.mlp.fc1.bias", (4 * dim,)),
            (f"{prefix}.mlp.fc2.weight", (dim, 4 * dim)), (f"{prefix}.mlp.fc2.bias", (dim,))]


def _ln(prefix: str, dim: int) -> list[tuple[str, tuple]]:
    return [(f"{prefix}.weight", (dim,)), (f"{prefix}.bias", (dim,))]


def _linear(prefix: str, out_dim: int, in_dim: int) -> list[tuple[str, tuple]]:
    return [(f"{prefix}.weight", (out_dim, in_dim)), (f"{prefix}.bias", (out_dim,))]


def _downsample(prefix: str, groups: int) -> list[tuple[str, tuple]]:
    p = prefix
    keys = _ln(f"{p}.norm_tokens", C) + _linear(f"{p}.mlp_inter.fc1", C // 2, groups)
    keys += _linear(f"{p}.mlp_inter.fc2", groups, C // 2) + _ln(f"{p}.norm_post_tokens", C) + _ln(f"{p}.norm_x", C)
    keys += _ln(f"{p}.pre_assign_attn.norm_post", C)
    for name in ("q_proj", "k_proj", "v_proj", "proj"):
        keys += _linear(f"{p}.pre_assign_attn.attn.{name}", C, C)
    keys += _ln(f"{p}.pre_assign_attn.norm2", C)
    keys += _linear(f"{p}.pre_assign_attn.mlp.fc1", 4 * C, C) + _linear(f"{p}.pre_assign_attn.mlp.fc2", C, 4 * C)
    for name in ("q_proj", "k_proj", "v_proj", "proj"):
        keys += _linear(f"{p}.assign.{name}", C, C)
    keys += _ln(f"{p}.norm_new_x", C) + _linear(f"{p}.mlp_channels.fc1", 4 * C, C)
    keys += _linear(f"{p}.mlp_channels.fc2", C, 4 * C)
    return keys


def _projector(prefix: str, in_dim: int) -> list[tuple[str, tuple]]:
    return [(f"{prefix}.linear_hidden.0.weight", (HIDDEN, in_dim, 1)), (f"{prefix}.linear_hidden.0.bias", (HIDDEN,)),
            (f"{prefix}.linear_hidden.1.weight", (HIDDEN,)), (f"{prefix}.linear_hidden.1.bias", (HIDDEN,)),
            (f"{prefix}.linear_hidden.1.running_mean", (HIDDEN,)), (f"{prefix}.linear_hidden.1.running_var", (HIDDEN,)),
            (f"{prefix}.linear_hidden.1.num_batches_tracked", ()),
            (f"{prefix}.linear_out.weight", (OUT, HIDDEN, 1)), (f"{prefix}.linear_out.bias", (OUT,))]


def appendix_a(multi_label: bool) -> list[tuple[str, tuple]]:
    """The released checkpoints' state_dict, in order, as the reference's classes instantiate them."""
    keys = [("logit_scale", ())] + ([("multi_label_logit_scale", ())] if multi_label else [])
    ie = "img_encoder"
    keys += [(f"{ie}.pos_embed", (1, 196, C)), (f"{ie}.patch_embed.proj.weight", (C, 3, 16, 16)),
             (f"{ie}.patch_embed.proj.bias", (C,))] + _ln(f"{ie}.patch_embed.norm", C)
    keys += [(f"{ie}.layers.0.group_token", (1, 64, C))]
    for j in range(6):
        keys += _block(f"{ie}.layers.0.blocks.{j}", C)
    keys += _downsample(f"{ie}.layers.0.downsample", 64)
    keys += [(f"{ie}.layers.1.group_token", (1, 8, C))]
    for j in range(3):
        keys += _block(f"{ie}.layers.1.blocks.{j}", C)
    keys += _downsample(f"{ie}.layers.1.downsample", 8)
    keys += _ln(f"{ie}.layers.1.group_projector.0", C) + _linear(f"{ie}.layers.1.group_projector.1.fc1", C // 2, 64)
    keys += _linear(f"{ie}.layers.1.group_projector.1.fc2", 8, C // 2)
    for j in range(3):
        keys += _block(f"{ie}.layers.2.blocks.{j}", C)
    keys += _ln(f"{ie}.norm", C)
    keys += [("text_encoder.positional_embedding", (77, T))]
    for k in range(12):
        p = f"text_encoder.transformer.resblocks.{k}"
        keys += [(f"{p}.attn.in_proj_weight", (3 * T, T)), (f"{p}.attn.in_proj_bias", (3 * T,))]
        keys += _linear(f"{p}.attn.out_proj", T, T) + _ln(f"{p}.ln_1", T)
        keys += _linear(f"{p}.mlp.c_fc", 4 * T, T) + _linear(f"{p}.mlp.c_proj", T, 4 * T) + _ln(f"{p}.ln_2", T)
    keys += _ln("text_encoder.ln_final", T) + [("text_encoder.token_embedding.weight", (49408, T))]
    return keys + _projector("img_projector", C) + _projector("text_projector", T)


@pytest.mark.parametrize(("cfg_file", "multi_label", "entries", "params"), [
    ("configs/group_vit_gcc_yfcc_30e.yml", True, 407, 55_726_610),
    ("configs/group_vit_gcc_redcap_30e.yml", False, 406, 55_726_609),
])
def test_full_size_state_dict_matches_appendix_a(cfg_file, multi_label, entries, params):
    cfg = load_config(cfg_file)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = build_model(cfg.model)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    want = appendix_a(multi_label)
    assert len(want) == entries
    assert got == want
    assert sum(p.numel() for p in model.parameters()) == params
    assert sum(p.numel() for p in model.img_encoder.parameters()) == 28_837_136
    assert sum(p.numel() for p in model.text_encoder.parameters()) == 22_145_792
    assert model.state_dict()["img_projector.linear_hidden.1.num_batches_tracked"].dtype == torch.int64
