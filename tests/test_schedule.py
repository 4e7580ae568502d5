"""Optimizer parameter groups (the reference's utils/optimizer.py), the LR schedule (its utils/lr_scheduler.py), LR
scaling (its main_group_vit.py: linear in the total batch size over 4096) and precision choice."""

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from models import build_model
from training.precision import resolve_precision
from training.run import scaled_train_config
from utils.config import load_config
from utils.errors import UserError
from utils.lr_scheduler import build_scheduler
from utils.optimizer import build_optimizer, param_groups

ROOT = Path(__file__).resolve().parents[1]


def spec_lr(t, base, warmup_lr, min_lr, warmup_t, t_initial):
    """Spec 6.7, written out independently of timm."""
    if t < warmup_t:
        return warmup_lr + t * (base - warmup_lr) / warmup_t
    if t >= t_initial:
        return min_lr
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * t / t_initial))


@pytest.fixture(scope="module")
def yfcc_model():
    torch.manual_seed(0)
    return build_model(load_config(ROOT / "configs" / "group_vit_gcc_yfcc_30e.yml").model)


def test_param_groups_match_reference_split(yfcc_model):
    decay, no_decay = param_groups(yfcc_model, 0.05)
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    assert len(no_decay["params"]) == 263 and sum(p.numel() for p in no_decay["params"]) == 151_824
    assert len(decay["params"]) == 138
    names = {id(p): n for n, p in yfcc_model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    for name in ("logit_scale", "multi_label_logit_scale", "img_encoder.pos_embed",
                 "text_encoder.positional_embedding", "text_encoder.token_embedding.weight",
                 "img_encoder.patch_embed.proj.weight", "img_projector.linear_out.weight"):
        assert name in decayed, name
    assert all(p.ndim == 1 or names[id(p)].endswith(".bias") for p in no_decay["params"])


def test_adamw_settings(yfcc_model):
    train = load_config(ROOT / "configs" / "default.yml").train
    optimizer = build_optimizer(train, yfcc_model)
    assert isinstance(optimizer, torch.optim.AdamW)
    group = optimizer.param_groups[0]
    assert group["lr"] == 1.6e-3 and group["betas"] == (0.9, 0.999) and group["eps"] == 1e-8
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]


@pytest.mark.parametrize("epochs, warmup_epochs, iters", [(3, 1, 5), (30, 2, 7), (2, 0.25, 10)])
def test_lr_at_each_iteration_equals_spec(epochs, warmup_epochs, iters):
    train = OmegaConf.create({"epochs": epochs, "warmup_epochs": warmup_epochs, "base_lr": 1e-3, "warmup_lr": 1e-6,
                              "min_lr": 1e-5, "weight_decay": 0.05, "lr_scheduler": {"name": "cosine"},
                              "optimizer": {"name": "adamw", "eps": 1e-8, "betas": [0.9, 0.999]}})
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(train, model)
    scheduler = build_scheduler(train, optimizer, iters)
    t_initial, warmup_t = epochs * iters, int(warmup_epochs * iters)  # a fraction: whole steps, as the reference
    used = []
    for epoch in range(epochs + 1):  # one epoch past the end: lr stays at min_lr
        for idx in range(iters):
            used.append([g["lr"] for g in optimizer.param_groups])
            scheduler.step_update(epoch * iters + idx)  # after the optimizer step, as the training loop does
    for k, lrs in enumerate(used):
        expected = spec_lr(max(k - 1, 0), 1e-3, 1e-6, 1e-5, warmup_t, t_initial)  # step k runs with lr(k - 1)
        assert lrs == pytest.approx([expected, expected], rel=1e-12), k
    assert used[0][0] == pytest.approx(1e-6)
    assert used[warmup_t + 1][0] == pytest.approx(spec_lr(warmup_t, 1e-3, 1e-6, 1e-5, warmup_t, t_initial))
    assert used[-1][0] == pytest.approx(1e-5)


@pytest.mark.parametrize("batch, world, accumulation, factor", [
    (256, 16, 0, 1.0), (2, 1, 0, 2 / 4096), (64, 8, 0, 512 / 4096), (32, 2, 4, 4 * 64 / 4096), (32, 2, 1, 64 / 4096),
])
def test_lr_scaling(batch, world, accumulation, factor):
    cfg = load_config(ROOT / "configs" / "default.yml")
    cfg.data.batch_size = batch
    cfg.train.accumulation_steps = accumulation
    OmegaConf.set_readonly(cfg, True)
    train = scaled_train_config(cfg, world)
    assert train.base_lr == pytest.approx(1.6e-3 * factor)
    assert train.warmup_lr == pytest.approx(4e-6 * factor)
    assert train.min_lr == pytest.approx(4e-5 * factor)
    assert (cfg.train.base_lr, cfg.train.warmup_lr, cfg.train.min_lr) == (1.6e-3, 4e-6, 4e-5)  # the config as written


@pytest.mark.parametrize("amp, level, device, name, dtype, scaler", [
    ("auto", "O1", "cpu", "fp32", None, False),
    ("auto", "O0", "cuda", "fp32", None, False),
    ("auto", "O1", "cuda", "fp16", torch.float16, True),
    ("auto", "O2", "cuda", "fp16", torch.float16, True),
    ("bf16", "O1", "cpu", "bf16", torch.bfloat16, False),
    ("bf16", "O0", "cuda", "bf16", torch.bfloat16, False),
    ("fp32", "O1", "cuda", "fp32", None, False),
    ("fp16", "O0", "cuda", "fp16", torch.float16, True),
])
def test_precision_choice(amp, level, device, name, dtype, scaler):
    train = OmegaConf.create({"amp": amp, "amp_opt_level": level})
    precision = resolve_precision(train, torch.device(device))
    assert (precision.name, precision.dtype, precision.use_scaler) == (name, dtype, scaler)


def test_precision_errors():
    with pytest.raises(UserError, match="fp16 needs CUDA"):
        resolve_precision(OmegaConf.create({"amp": "fp16", "amp_opt_level": "O1"}), torch.device("cpu"))


def test_bf16_autocast_on_cpu():
    precision = resolve_precision(OmegaConf.create({"amp": "bf16", "amp_opt_level": "O1"}), torch.device("cpu"))
    with precision.autocast(torch.device("cpu")):
        out = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
