"""The segmentor equals the reference on the golden `seg` and `clamp_case` entries (tests/golden/README.md).

Tolerances are the golden README's recommended checks: attention maps atol 5e-5; `encode_decode` outputs atol
1e-5 outside the near-tie pixels (a pixel whose two best groups differ by < 1e-4 may flip group); slide
logits atol 1e-4 and the label map exactly, outside the `unstable` pixels.
"""

import pytest
import torch
from mmseg.structures import SegDataSample

from segmentation.evaluation import build_segmentor
from segmentation.evaluation.group_vit_seg import token_grid

VOC_CFG = "segmentation/configs/_base_/datasets/pascal_voc12.py"
MAP_ATOL = 5e-5
ENCODE_DECODE_ATOL = 1e-5
SLIDE_ATOL = 1e-4
TEXT_TOL = dict(atol=2e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def seg_model(tiny_model, golden):
    return build_segmentor(tiny_model, golden["seg"]["classes"], VOC_CFG)


def stable(shape, unstable_flat: torch.Tensor) -> torch.Tensor:
    """Boolean [H, W] mask: False at the listed flat (row-major) indices."""
    mask = torch.ones(shape[0] * shape[1], dtype=torch.bool)
    mask[unstable_flat] = False
    return mask.view(*shape)


def factorized_output(ed: dict) -> torch.Tensor:
    """The reference `encode_decode` output [1, 21, H, W] from its group map and per-group rows."""
    return ed["rows"][ed["group_map"].long()].permute(2, 0, 1)[None]


def check_encode_decode(out: torch.Tensor, group_map: torch.Tensor, ed: dict, rows: torch.Tensor) -> float:
    """Compare an `encode_decode` output (and its group map) with the reference outside near ties."""
    ok = stable(ed["group_map"].shape, ed["near_tie"])
    assert torch.equal(group_map[ok], ed["group_map"].long()[ok])
    ref = factorized_output({"rows": rows, "group_map": ed["group_map"]})
    deviation = (out - ref).abs()[..., ok].max().item()
    assert deviation < ENCODE_DECODE_ATOL
    return deviation


def test_config_and_text_embedding(seg_model, golden):
    assert seg_model.classes == tuple(golden["seg"]["classes"])
    assert seg_model.with_bg and seg_model.num_classes == 21
    ref = golden["seg"]["test_cfg"]
    assert (seg_model.test_cfg.mode, seg_model.bg_thresh) == (ref["mode"], ref["bg_thresh"])
    assert list(seg_model.test_cfg.stride) == ref["stride"] and list(seg_model.test_cfg.crop_size) == ref["crop_size"]
    torch.testing.assert_close(seg_model.text_embedding, golden["text_embedding"]["voc"], **TEXT_TOL)


def test_token_grid():
    assert token_grid(448, 448, 784) == (28, 28)
    assert token_grid(448, 592, 1036) == (28, 37)
    assert token_grid(592, 448, 1036) == (37, 28)
    assert token_grid(448, 597, 1036) == (28, 37)  # the patch embedding drops the incomplete last column


@pytest.mark.parametrize("name", ["img448", "img_rect"])
def test_attn_maps(seg_model, golden, name):
    ref = golden["seg"][name]["attn_maps"]
    with torch.no_grad():
        maps = seg_model.get_attn_maps(golden["inputs"][name])
    assert len(maps) == len(ref) == 2
    for mine, theirs in zip(maps, ref, strict=True):
        assert mine.shape == theirs["argmax"].shape + theirs["sub"].shape[-1:]
        assert (mine[:, ::5, ::5] - theirs["sub"]).abs().max().item() < MAP_ATOL
        ok = stable(theirs["argmax"].shape[1:], theirs["near_tie"])[None]
        assert torch.equal(mine.argmax(dim=-1)[ok], theirs["argmax"].long()[ok])


@pytest.mark.parametrize("name", ["img448", "img_rect"])
def test_encode_decode(seg_model, golden, name):
    """One crop (img_rect: the whole 448x592 image, as the demo runs)."""
    img = golden["inputs"][name]
    ed = golden["seg"][name]["encode_decode"]
    with torch.no_grad():
        out = seg_model.encode_decode(img, [dict(img_shape=img.shape[-2:], ori_shape=img.shape[-2:])])
        group_map = seg_model.get_attn_maps(img)[-1].argmax(dim=-1)[0]
    assert out.shape == (1, 21, *img.shape[-2:])
    check_encode_decode(out, group_map, ed, ed["rows"])
    # background is 0/1 and exactly one of "background" / "some class reaches the threshold" holds
    assert set(out[:, 0].unique().tolist()) <= {0.0, 1.0}


def test_slide_inference(seg_model, golden, monkeypatch):
    """mmseg 1.x slide inference + postprocess = the reference's mmseg 0.x windows, averaging, resize, argmax."""
    sl = golden["seg"]["slide_img_rect"]
    img = golden["inputs"]["img_rect"]
    meta = dict(ori_shape=tuple(sl["img_meta"]["ori_shape"][:2]), img_shape=tuple(sl["img_meta"]["img_shape"][:2]))

    crops = []  # the image encoder's inputs
    encode_decode, encoder_forward = seg_model.encode_decode, seg_model.model.img_encoder.forward

    def recording(inputs, **kwargs):
        crops.append(inputs)
        return encoder_forward(inputs, **kwargs)

    monkeypatch.setattr(seg_model.model.img_encoder, "forward", recording)
    with torch.no_grad():
        before_resize = seg_model.inference(img, [dict(meta)])
        sample = seg_model.predict(img, [SegDataSample(metainfo=meta)])[0]

    # the windows: (0, 448, 0, 448) and (0, 448, 144, 592), each a full 448 crop
    windows = sl["windows"]
    crops = list(torch.cat(crops).split(1))  # one [1, 3, h, w] crop per window, however the windows were batched
    assert len(crops) == 2 * len(windows)
    for crop, window in zip(crops[: len(windows)], windows, strict=True):
        expected = img[..., window["y1"]:window["y2"], window["x1"]:window["x2"]]
        assert torch.equal(crop, expected)
        with torch.no_grad():
            out = encode_decode(crop, [dict(meta)])
            group_map = seg_model.get_attn_maps(crop)[-1].argmax(dim=-1)[0]
        check_encode_decode(out, group_map, window, window["rows"])

    pb = sl["preds_before_resize"]
    ok = stable(img.shape[-2:], pb["unstable"])[::5, ::5]
    assert (before_resize[:, :, ::5, ::5] - pb["sub"]).abs()[..., ok].max().item() < SLIDE_ATOL

    logits = sample.seg_logits.data[None]  # [1, 21, 336, 444]
    assert logits.shape == tuple(sl["logits"]["stats"]["shape"])
    ok = stable(sl["label"].shape, sl["unstable"])
    assert (logits[:, :, ::5, ::5] - sl["logits"]["sub"]).abs()[..., ok[::5, ::5]].max().item() < SLIDE_ATOL
    assert abs(logits.double().sum().item() - sl["logits"]["stats"]["sum"]) < 1e-3 * sl["logits"]["stats"]["sum"]
    label = sample.pred_sem_seg.data[0]
    assert torch.equal(label.to(torch.uint8)[ok], sl["label"][ok])


@pytest.mark.parametrize("name", ["img448", "img_rect"])
def test_logit_scale_clamp(tiny_model, golden, name):
    """With every logit scale at 5.0 (exp = 148), segmentation uses 100, as the reference does."""
    case = golden["clamp_case"]
    saved = {n: p.detach().clone() for n, p in tiny_model.named_parameters() if n.endswith("logit_scale")}
    try:
        with torch.no_grad():
            for n in saved:
                tiny_model.get_parameter(n).fill_(case["logit_scale"])
            seg = build_segmentor(tiny_model, golden["seg"]["classes"], VOC_CFG)
            img = golden["inputs"][name]
            out = seg.encode_decode(img, [dict(img_shape=img.shape[-2:], ori_shape=img.shape[-2:])])
            group_map = seg.get_attn_maps(img)[-1].argmax(dim=-1)[0]
    finally:
        with torch.no_grad():
            for n, v in saved.items():
                tiny_model.get_parameter(n).copy_(v)
    check_encode_decode(out, group_map, golden["seg"][name]["encode_decode"], case[name]["encode_decode"]["rows"])
    assert not torch.equal(case[name]["encode_decode"]["rows"].nan_to_num(),
                           golden["seg"][name]["encode_decode"]["rows"].nan_to_num())
