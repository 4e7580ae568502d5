"""The group loss (ours, ``model.group_loss_weight``): the multi-label loss with each image's similarity to a prompt
taken from its best-matching final group. Off (weight 0) it changes nothing; on, it equals a loop written from
its definition, and its gradient reaches the grouping."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.testing import assert_close

from models import build_model


def loop_group_loss(image_feat: torch.Tensor, text_feat: torch.Tensor, scale: float) -> torch.Tensor:
    """The definition, one pair at a time: s(b, t) = scale * max_g cos(group g of image b, text t); an image row
    puts 1/M on its own M prompts, a prompt row puts 1 on its own image; the mean of the two cross-entropies."""
    B, G, _ = image_feat.shape
    M = text_feat.shape[1]
    texts = [(b, m) for b in range(B) for m in range(M)]
    sim = torch.empty(B, B * M, dtype=torch.float64)
    for b in range(B):
        for j, (c, m) in enumerate(texts):
            sim[b, j] = scale * max(F.cosine_similarity(image_feat[b, g], text_feat[c, m], dim=0) for g in range(G))
    per_img = [-sum(torch.log_softmax(sim[b], 0)[j] for j, (c, _) in enumerate(texts) if c == b) / M for b in range(B)]
    per_text = [-torch.log_softmax(sim[:, j], 0)[c] for j, (c, _) in enumerate(texts)]
    return 0.5 * (sum(per_img) / B + sum(per_text) / (B * M))


def test_group_loss_equals_its_definition(tiny_model):
    torch.manual_seed(0)
    image_feat, text_feat = torch.randn(3, 4, 8, dtype=torch.float64), torch.randn(3, 2, 8, dtype=torch.float64)
    model = copy.deepcopy(tiny_model).double()
    scale = model.clamped_scale(model.multi_label_logit_scale).item()
    assert_close(model.multi_label_loss(image_feat, text_feat), loop_group_loss(image_feat, text_feat, scale))


def test_one_group_is_the_reference_multi_label_loss(tiny_model):
    """With G = 1 the max is the image vector itself: the reference's loss (the golden tests check its values)."""
    torch.manual_seed(1)
    image_x, text_feat = torch.randn(4, 1, 96), torch.randn(4, 3, 96)
    scale = tiny_model.clamped_scale(tiny_model.multi_label_logit_scale).item()
    assert_close(tiny_model.multi_label_loss(image_x, text_feat).double(),
                 loop_group_loss(image_x.double(), text_feat.double(), scale), atol=1e-5, rtol=1e-5)


def model_config(tiny_ckpt, **changes):
    return OmegaConf.create({**OmegaConf.to_container(tiny_ckpt["config"].model, resolve=True), **changes})


def test_group_loss_trains_the_grouping(tiny_ckpt, golden):
    """On: a 'group_loss' entry, and its gradient reaches the assignment's query/key projections; off: the losses
    are exactly the reference's."""
    off = build_model(model_config(tiny_ckpt)).train()
    on = build_model(model_config(tiny_ckpt, group_loss_weight=2.0)).train()
    on.load_state_dict(off.state_dict())
    image, text = golden["inputs"]["img224"], golden["text"]["multi_label_tokens"]
    torch.manual_seed(0)
    losses_off = off.forward_train(image, text)
    torch.manual_seed(0)
    losses_on = on.forward_train(image, text)
    assert set(losses_off) == {"loss", "multi_label_loss"}
    assert set(losses_on) == {"loss", "multi_label_loss", "group_loss"}
    for name in losses_off:
        assert torch.equal(losses_on[name], losses_off[name])
    assert math.isfinite(losses_on["group_loss"].item()) and losses_on["group_loss"].item() > 0
    losses_on["group_loss"].backward()
    assign = on.img_encoder.layers[0].downsample.assign
    assert assign.q_proj.weight.grad.abs().sum() > 0 and assign.k_proj.weight.grad.abs().sum() > 0


def test_group_loss_needs_noun_prompts(tiny_ckpt):
    with pytest.raises(ValueError, match="multi_label > 0"):
        build_model(model_config(tiny_ckpt, multi_label=0, group_loss_weight=1.0))
