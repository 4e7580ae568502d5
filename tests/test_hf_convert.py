"""models/hf_convert.py and tools/convert_hf_checkpoint.py: parity with transformers' GroupViTModel, round trips."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from models import build_model
from models.hf_convert import (
    HF_POSITION_IDS,
    hf_config_from_model_cfg,
    hf_to_reference,
    model_cfg_from_hf_config,
    reference_to_hf,
)
from utils.checkpoint import load_checkpoint
from utils.errors import UserError

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing here may touch the network
transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_CKPT = ROOT / "tests" / "golden" / "tiny_official_ckpt.pth"
GOLDEN_CFG = ROOT / "tests" / "golden" / "tiny_model.yml"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def tiny_hf_config():
    """The tiny golden sizes, as a transformers GroupViTConfig."""
    return transformers.GroupViTConfig(
        text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=1),
        vision_config=dict(hidden_size=96, intermediate_size=384, depths=[2, 1, 1], num_hidden_layers=4,
                           num_attention_heads=3, num_group_tokens=[16, 4, 0], num_output_groups=[16, 4, 4]),
        projection_dim=64, projection_intermediate_dim=4096)


@torch.no_grad()
def randomize(model: torch.nn.Module, seed: int = 0) -> None:
    """Random values for every weight and buffer (so swapped names or ignored BN statistics show up)."""
    g = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        if not t.is_floating_point():
            continue
        noise = torch.randn(t.shape, generator=g)
        if name.endswith("running_var"):
            t.copy_(0.5 + torch.rand(t.shape, generator=g))
        elif t.ndim >= 2 and "embedding" not in name:  # Linear / Conv: N(0, 1/fan_in)
            t.copy_(noise / math.sqrt(t[0].numel()))
        elif "embedding" in name or "group_token" in name:
            t.copy_(0.5 * noise)
        elif name.endswith("weight"):  # LayerNorm / BatchNorm scales
            t.copy_(1 + 0.1 * noise)
        elif name != "logit_scale":  # biases, running means
            t.copy_(0.1 * noise)


def tokens(batch: int, seed: int = 1) -> torch.Tensor:
    """[batch, 77] ids: SOT, random BPE ids, EOT 49407 (the max id), zero padding."""
    g = torch.Generator().manual_seed(seed)
    text = torch.zeros(batch, 77, dtype=torch.long)
    for row, n in enumerate(torch.randint(1, 70, (batch,), generator=g).tolist()):
        text[row, 0] = 49406
        text[row, 1:n + 1] = torch.randint(1, 49406, (n,), generator=g)
        text[row, n + 1] = 49407
    return text


def pooled(out) -> torch.Tensor:
    """transformers >= 5 returns a ModelOutput from get_*_features; 4.x returned the tensor."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


def test_parity_with_transformers():
    config = tiny_hf_config()
    torch.manual_seed(0)
    hf = transformers.GroupViTModel(config).eval()
    randomize(hf)
    ours = build_model(model_cfg_from_hf_config(config)).eval()
    state = hf_to_reference(hf.state_dict())
    assert list(state) == list(ours.state_dict())  # the reference order
    ours.load_state_dict(state, strict=True)

    image = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    text = tokens(4)
    with torch.no_grad():
        # both unnormalised: projected mean token / projected EOT feature
        hf_img, our_img = pooled(hf.get_image_features(pixel_values=image)), ours.encode_image(image)
        hf_txt, our_txt = pooled(hf.get_text_features(input_ids=text)), ours.encode_text(text)
        hf_logits = hf(input_ids=text, pixel_values=image).logits_per_image
        our_logits = ours.zero_shot_pred(image, torch.nn.functional.normalize(our_txt, dim=-1))
        our_logits = our_logits * ours.clamped_scale(ours.logit_scale)  # below ln(100), so = HF's unclamped scale
    print(f"max abs diff: image {(hf_img - our_img).abs().max():.2e}, text {(hf_txt - our_txt).abs().max():.2e}, "
          f"logits {(hf_logits - our_logits).abs().max():.2e}")
    assert our_img.shape == (3, 64) and our_txt.shape == (4, 64)
    assert our_img.abs().mean() > 0.1 and our_txt.abs().mean() > 0.1
    torch.testing.assert_close(our_img, hf_img, atol=1e-4, rtol=0)
    torch.testing.assert_close(our_txt, hf_txt, atol=1e-4, rtol=0)
    torch.testing.assert_close(our_logits, hf_logits, atol=1e-4, rtol=1e-5)


def test_golden_checkpoint_round_trip(tiny_ckpt):
    ckpt = tiny_ckpt
    ref = ckpt["model"]
    hf_state = reference_to_hf(ref)
    assert not any("multi_label" in k for k in hf_state)
    assert all(t.is_contiguous() for t in hf_state.values())
    hf = transformers.GroupViTModel(hf_config_from_model_cfg(ckpt["config"].model))
    expected = hf.state_dict()
    if HF_POSITION_IDS in expected:  # a persistent buffer in older transformers
        hf_state = reference_to_hf(ref, position_ids=True)
    assert set(hf_state) == set(expected)
    hf.load_state_dict(hf_state, strict=True)

    back = hf_to_reference(hf.state_dict(), multi_label_logit_scale=ref["multi_label_logit_scale"])
    assert list(back) == list(ref)
    for key, value in ref.items():
        assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
        assert back[key].is_contiguous()
    # without the scale, it is simply absent
    assert list(hf_to_reference(hf_state)) == [k for k in ref if k != "multi_label_logit_scale"]


def test_config_round_trip(tiny_ckpt):
    model_cfg = model_cfg_from_hf_config(hf_config_from_model_cfg(tiny_ckpt["config"].model), multi_label=3)
    shapes = {k: v.shape for k, v in build_model(model_cfg).state_dict().items()}
    assert shapes == {k: v.shape for k, v in tiny_ckpt["model"].items()}
    assert model_cfg["contrast_temperature"] == 0.07 and model_cfg["img_encoder"]["num_output_groups"] == [16, 4]


@pytest.mark.parametrize("change", [
    {"proj_num_layers": 3},
    {"img_encoder": {"num_heads": [3, 3, 6]}},
    {"img_encoder": {"num_output_groups": [8, 4]}},  # HF's group projector would expect 8 input groups, not 16
    {"img_encoder": {"hard_assignment": False}},
    {"text_encoder": {"type": "Transformer"}},
])
def test_unrepresentable_model_config(tiny_ckpt, change):
    cfg = OmegaConf.to_container(tiny_ckpt["config"].model, resolve=True)
    for key, value in change.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    with pytest.raises(UserError):
        hf_config_from_model_cfg(cfg)


def test_unrepresentable_hf_config():
    config = tiny_hf_config()
    config.text_config.hidden_act = "gelu"
    with pytest.raises(UserError, match="activations"):
        model_cfg_from_hf_config(config)
    with pytest.raises(UserError, match="not a Hugging Face"):
        hf_to_reference({"vision_model.bogus.weight": torch.zeros(1)})
    with pytest.raises(UserError, match="not a reference"):
        reference_to_hf({"vision_model.layernorm.weight": torch.zeros(1)})


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "tools/convert_hf_checkpoint.py", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=300)


def test_cli_both_directions_round_trip_exactly(tmp_path):
    """.pth -> folder -> .pth without --cfg: the same state dict, multi_label_logit_scale included."""
    hf_dir, back = tmp_path / "hf", tmp_path / "back.pth"
    result = run_cli("--to-hf", str(GOLDEN_CKPT), str(hf_dir))
    assert result.returncode == 0, result.stderr
    config = transformers.GroupViTConfig.from_pretrained(hf_dir, local_files_only=True)
    assert config.vision_config.hidden_size == 96 and config.text_config.num_hidden_layers == 2
    ref = load_checkpoint(str(GOLDEN_CKPT))
    assert config.multi_label_loss == {"multi_label": 3, "logit_scale": float(ref["model"]["multi_label_logit_scale"])}

    result = run_cli("--from-hf", str(hf_dir), str(back))
    assert result.returncode == 0, result.stderr
    converted = load_checkpoint(str(back))
    assert list(converted["model"]) == list(ref["model"])
    for key, value in ref["model"].items():
        assert converted["model"][key].dtype == value.dtype and torch.equal(converted["model"][key], value), key
    assert converted["config"]["model"]["multi_label"] == 3
    build_model(converted["config"]["model"]).load_state_dict(converted["model"], strict=True)

    # with --cfg, the whole config is stored; a config of other sizes is refused in one line
    result = run_cli("--from-hf", str(hf_dir), str(tmp_path / "cfg.pth"), "--cfg", str(GOLDEN_CFG))
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(str(tmp_path / "cfg.pth"))["config"]["data"]["text_aug"]["multi_label"] == 3
    result = run_cli("--from-hf", str(hf_dir), str(tmp_path / "no.pth"), "--cfg", "configs/group_vit_gcc_yfcc_30e.yml")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "vision.hidden_size 384 vs 96" in result.stderr
    assert not (tmp_path / "no.pth").exists()


def test_cli_errors(tmp_path):
    result = run_cli("--to-hf", str(tmp_path / "missing.pth"), str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing.pth" in lines[0], result.stderr
    result = run_cli("--from-hf", str(tmp_path), str(tmp_path / "out.pth"))
    assert result.returncode == 2 and "config.json" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("keep me")
    result = run_cli("--to-hf", str(GOLDEN_CKPT), str(tmp_path / "taken"))
    assert result.returncode == 2 and "refusing to overwrite a model folder" in result.stderr
    assert (tmp_path / "taken" / "notes.txt").read_text() == "keep me"
