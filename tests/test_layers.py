"""The library pieces models/ uses in place of hand-written ones give the reference's values, and ``gumbel``
is its own switch beside ``hard_assignment``."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from timm.layers import resample_abs_pos_embed

from models import build_model
from models.group_vit import AssignAttention
from models.layers import straight_through_one_hot

TINY = Path(__file__).parent / "golden" / "tiny_model.yml"


def reference_gumbel_softmax(logits: torch.Tensor, dim: int, tau: float = 1.0, hard: bool = True) -> torch.Tensor:
    """The reference's hand-written Gumbel softmax (models/group_vit.py there)."""
    gumbels = -torch.empty_like(logits).exponential_().log()
    y_soft = ((logits + gumbels) / tau).softmax(dim)
    return straight_through_one_hot(y_soft, dim) if hard else y_soft


@pytest.mark.parametrize("hard", [True, False])
def test_torch_gumbel_softmax_is_the_reference_bit_for_bit(hard):
    logits = torch.randn(2, 1, 8, 49, requires_grad=True)
    torch.manual_seed(3)
    ours = F.gumbel_softmax(logits, tau=1.0, hard=hard, dim=-2)
    torch.manual_seed(3)
    ref = reference_gumbel_softmax(logits, dim=-2, hard=hard)
    assert torch.equal(ours, ref)
    grad = torch.randn_like(ours)
    (grad_ours,), (grad_ref,) = torch.autograd.grad(ours, logits, grad), torch.autograd.grad(ref, logits, grad)
    assert torch.equal(grad_ours, grad_ref)


def test_cross_entropy_with_probability_targets_is_soft_cross_entropy():
    logits, target = torch.randn(6, 18, dtype=torch.float64), torch.rand(6, 18, dtype=torch.float64).softmax(-1)
    reference = torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
    torch.testing.assert_close(F.cross_entropy(logits, target), reference, rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [(14, 14), (28, 37), (7, 9)])
def test_timm_pos_embed_resampling_is_the_reference_bicubic(size):
    pos = torch.randn(1, 196, 32)
    grid = pos.reshape(1, 14, 14, 32).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=size, mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(1, -1, 32)
    ours = resample_abs_pos_embed(pos, new_size=list(size), num_prefix_tokens=0, interpolation="bicubic",
                                  antialias=False)
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("hard, gumbel, expected", [(True, None, True), (False, None, False), (True, False, False),
                                                    (False, True, True)])
def test_gumbel_follows_hard_assignment_unless_given(hard, gumbel, expected):
    cfg = OmegaConf.to_container(OmegaConf.load(TINY).model, resolve=True)
    cfg["img_encoder"].update(hard_assignment=hard, **({} if gumbel is None else {"gumbel": gumbel}))
    assigns = [m for m in build_model(cfg).modules() if isinstance(m, AssignAttention)]
    assert assigns and all(m.gumbel == expected and m.hard == hard for m in assigns)
