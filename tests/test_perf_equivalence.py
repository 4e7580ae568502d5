"""The fast paths compute what the reference-faithful ones compute (models/reference_faithful.py and
segmentation/evaluation/reference_segmentor.py hold the latter).

Segmentation: batched sliding windows = mmseg's one-window-at-a-time ``slide_inference`` (same windows, same sums);
our ``postprocess_result`` = mmseg's resize/flip/padding handling with the reference's label; ``encode_decode`` with one
encoder pass = the reference's two passes. Model: text truncated to the longest caption, captions and prompts encoded
apart, Linear projectors and fused attention = the reference-faithful computations, in values and in gradients.
"""

import contextlib
import copy

import segmentation  # noqa: F401  (first: installs the mmcv._ext stand-in that mmseg.models needs)

# isort: split
import pytest
import torch
from mmseg.models import EncoderDecoder
from mmseg.models.segmentors.base import BaseSegmentor
from mmseg.structures import SegDataSample

from models.layers import attention, explicit_attention
from models.multi_label_contrastive import ProjectMLP
from models.reference_faithful import reference_faithful, reference_project
from models.transformer import used_length
from segmentation.evaluation import build_segmentor, load_seg_config
from segmentation.evaluation.group_vit_seg import slide_windows
from segmentation.evaluation.reference_segmentor import ReferenceSegInference

VOC_CFG = "segmentation/configs/_base_/datasets/pascal_voc12.py"
SIZES = [(448, 592), (592, 448), (448, 448), (300, 500), (200, 300), (449, 900), (900, 460)]


@pytest.fixture(scope="module")
def seg_model(tiny_model, golden):
    return build_segmentor(tiny_model, golden["seg"]["classes"], VOC_CFG)


@pytest.mark.parametrize("size", SIZES)
def test_slide_windows_are_mmsegs(seg_model, size):
    """The windows mmseg's loop visits (read back from crops of an image whose pixels hold their coordinates)."""
    height, width = size
    image = torch.stack(torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")).float()
    image = torch.cat([image, torch.zeros(1, height, width)])[None]  # [1, 3, H, W]: row, column, 0
    seen = []

    def record(crop, metas):
        seen.append((int(crop[0, 0, 0, 0]), int(crop[0, 0, 0, 0]) + crop.shape[2],
                     int(crop[0, 1, 0, 0]), int(crop[0, 1, 0, 0]) + crop.shape[3]))
        return crop.new_zeros(1, seg_model.out_channels, *crop.shape[2:])

    stub = copy.copy(seg_model)
    stub.encode_decode = record
    EncoderDecoder.slide_inference(stub, image, [dict(ori_shape=size, img_shape=size)])
    assert slide_windows(height, width, seg_model.test_cfg.crop_size, seg_model.test_cfg.stride) == seen
    assert len({(y2 - y1, x2 - x1) for y1, y2, x1, x2 in seen}) == 1  # all windows of an image have one size


@contextlib.contextmanager
def encoder_passes(seg_model):
    """Within the block, the list holds the batch size of every pass through ``seg_model``'s image encoder."""
    passes = []
    hook = seg_model.model.img_encoder.register_forward_pre_hook(lambda module, args: passes.append(len(args[0])))
    try:
        yield passes
    finally:
        hook.remove()


@pytest.mark.parametrize("size", [(448, 592), (300, 500), (449, 900)])
def test_batched_slide_equals_one_window_at_a_time(seg_model, golden, size):
    generator = torch.Generator().manual_seed(sum(size))
    image = golden["inputs"]["img_rect"] if size == (448, 592) else torch.randn(2, 3, *size, generator=generator)
    metas = [dict(ori_shape=size, img_shape=size) for _ in range(len(image))]
    with torch.no_grad(), encoder_passes(seg_model) as passes:
        fast = seg_model.slide_inference(image, [dict(m) for m in metas])
        calls = len(passes)
        one_by_one = EncoderDecoder.slide_inference(seg_model, image, [dict(m) for m in metas])
    windows = slide_windows(*size, seg_model.test_cfg.crop_size, seg_model.test_cfg.stride)
    assert calls == 1 and passes[0] == len(windows) * len(image)  # every window of the batch in one encoder pass
    assert passes[1:] == [len(image)] * len(windows)
    torch.testing.assert_close(fast, one_by_one, atol=1e-5, rtol=0)
    assert torch.equal(fast.argmax(dim=1), one_by_one.argmax(dim=1))


@pytest.mark.parametrize("meta", [
    dict(ori_shape=(336, 444)),
    dict(ori_shape=(300, 200), padding_size=[3, 5, 2, 4], flip=True, flip_direction="horizontal"),
    dict(ori_shape=(120, 90), img_padding_size=[0, 7, 9, 0], flip=True, flip_direction="vertical"),
])
def test_postprocess_is_mmsegs_with_the_reference_label(seg_model, meta):
    logits = torch.randn(1, seg_model.out_channels, 60, 80, generator=torch.Generator().manual_seed(0))
    logits[:, 3] = logits[:, 5]  # exact ties: the lowest index wins
    ours = seg_model.postprocess_result(logits, [SegDataSample(metainfo=meta)])[0]
    theirs = BaseSegmentor.postprocess_result(seg_model, logits, [SegDataSample(metainfo=meta)])[0]
    assert torch.equal(ours.seg_logits.data, theirs.seg_logits.data)
    assert torch.equal(ours.pred_sem_seg.data, theirs.seg_logits.data.softmax(dim=0).argmax(dim=0, keepdim=True))
    bare = seg_model.postprocess_result(logits, None)[0]  # no samples: no resize, as mmseg
    assert torch.equal(bare.seg_logits.data, logits[0])


def dense_reference_labels(seg, image: torch.Tensor, metas: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image (first threshold's seg_logits [C, H, W], label maps [K or 1, H, W]) the dense way: mmseg's
    one-window-at-a-time inference of every channel, mmseg's postprocess_result, the softmax argmax per threshold."""
    with torch.no_grad():
        if seg.test_cfg.mode == "slide":
            logits = EncoderDecoder.slide_inference(seg, image, [dict(m) for m in metas])
        else:
            logits = seg.encode_decode(image, [dict(m) for m in metas])
        samples = BaseSegmentor.postprocess_result(seg, logits, [SegDataSample(metainfo=dict(m)) for m in metas])
    K, out = len(seg.bg_threshs), []
    for sample in samples:
        full = sample.seg_logits.data  # [K + N, H, W]
        per_thresh = [full] if K <= 1 else [torch.cat([full[k:k + 1], full[K:]]) for k in range(K)]
        out.append((per_thresh[0], torch.cat([p.softmax(dim=0).argmax(dim=0, keepdim=True) for p in per_thresh])))
    return out


@pytest.mark.parametrize("case", ["voc", "voc-sweep", "voc-whole", "stuff"])
def test_predict_on_the_scoring_channels_equals_dense(tiny_model, golden, case):
    """predict computes only the channels some group scores (at most 5 classes per window); its seg_logits and
    labels equal mmseg's dense path over every channel, with and without background, for a threshold sweep and
    whole-image mode, on a batch of two images with padding and flips."""
    from segmentation.datasets import COCO_STUFF_CLASSES

    threshs = {"voc-sweep": [0.01, 0.05, 0.95], "voc-whole": [0.0]}.get(case)
    if case == "stuff":
        classes, cfg, opts = list(COCO_STUFF_CLASSES), "segmentation/configs/_base_/datasets/coco_stuff.py", ()
    else:
        classes, cfg = golden["seg"]["classes"], VOC_CFG
        opts = ("test_cfg.mode=whole",) if case == "voc-whole" else ()
    seg = build_segmentor(tiny_model, classes, cfg, opts, bg_threshs=threshs)
    noise = torch.randn(1, 3, 448, 592, generator=torch.Generator().manual_seed(3))
    image = torch.cat([golden["inputs"]["img_rect"], noise])  # [2, 3, 448, 592]
    metas = [dict(ori_shape=(300, 400), img_shape=(448, 592)),
             dict(ori_shape=(350, 460), img_shape=(448, 592), padding_size=[0, 8, 0, 4], flip=True,
                  flip_direction="horizontal")]
    with torch.no_grad():
        scores = seg.window_scores(image, seg.windows(image))
        samples = seg.predict(image, [SegDataSample(metainfo=dict(m)) for m in metas])
    assert len(scores.channels) < seg.out_channels  # the test runs the reduced path
    for sample, (logits, labels) in zip(samples, dense_reference_labels(seg, image, metas), strict=True):
        assert torch.equal(sample.seg_logits.data, logits)
        assert torch.equal(sample.get("pred_sem_seg_per_thresh", sample.pred_sem_seg).data, labels)
    assert len(samples[0].pred_sem_seg.data.unique()) > 1  # not a trivial labelling


def softmax_argmax(values: torch.Tensor, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """The reference's label of [A, H, W] scores of ``labels`` of ``num_labels`` (the others 0): [1, H, W]."""
    dense = values.new_zeros((num_labels, *values.shape[1:]))
    dense[labels] = values
    return dense.softmax(dim=0).argmax(dim=0, keepdim=True)


@pytest.mark.parametrize("case", ["near-ties", "best-zero", "best-tiny", "exact-ties", "negative", "nan", "all-labels"])
def test_label_map_is_the_softmax_argmax(case):
    """label_map over some of the labels (the others 0) = argmax of the softmax over all of them, also where the
    softmax rounds near-ties into exact ties, at a best score of 0 or just above it, and for negative or non-finite
    scores. Each case alone: any pixel of a map can send it to the dense softmax."""
    from segmentation.evaluation.group_vit_seg import label_map

    values = torch.rand(4, 60, 80, generator=torch.Generator().manual_seed(0))  # labels 1, 2, 4, 6 of 8
    labels, num_labels = torch.tensor([1, 2, 4, 6]), 8
    if case == "near-ties":
        values[3, :20] = values[2, :20] = values[:, :20].max(dim=0).values + 0.01
        values[3, :20] = torch.nextafter(values[2, :20], torch.tensor(2.0))  # 1 ulp above label 4's best
    elif case == "best-zero":
        values[:, 20:25] = 0.0  # the missing label 0 wins the tie
    elif case == "best-tiny":
        values[:, 25:28] = 2e-8  # the missing labels' 0 nearly ties (exp(-2e-8) rounds to 1)
    elif case == "exact-ties":
        values[1, 28:30] = values[0, 28:30] = 2.0  # the lower label
    elif case == "negative":
        values -= 2.0  # the missing labels' 0 wins
    elif case == "nan":
        values[1, 50, 50] = float("nan")
    else:
        labels, num_labels = torch.arange(4), 4
    expected = softmax_argmax(values, labels, num_labels)
    assert torch.equal(label_map(values, labels, num_labels), expected)
    if case in ("near-ties", "best-zero", "best-tiny", "negative"):  # the first maximum of the scores is wrong
        assert not torch.equal(labels[values.max(dim=0, keepdim=True).indices], expected)


def test_label_map_decides_a_few_near_ties_as_a_full_map_does():
    """The softmax kernel's vectorised path and its scalar tail can round a near-tie differently; label_map decides
    its few undecided pixels on the vectorised path, as a full map's softmax decides almost all of its pixels."""
    from segmentation.evaluation.group_vit_seg import label_map

    generator = torch.Generator().manual_seed(0)
    candidates = torch.rand(8, 4096, generator=generator)  # columns with a 1-ulp near-tie between labels 2 and 5
    candidates[2] = candidates.max(dim=0).values + 0.01
    candidates[5] = torch.nextafter(candidates[2], torch.tensor(2.0))
    whole = candidates.softmax(dim=0).argmax(dim=0)
    alone = torch.cat([candidates[:, i:i + 1].softmax(dim=0).argmax(dim=0) for i in range(4096)])  # scalar tail
    split = (whole != alone).nonzero()[:3, 0]
    assert len(split) == 3
    values = torch.rand(8, 8, 16, generator=generator) * 0.5  # decided everywhere but at three pixels
    values.view(8, -1)[:, [5, 40, 77]] = candidates[:, split]
    labels = torch.arange(8)
    assert torch.equal(label_map(values, labels, 8), softmax_argmax(values, labels, 8))


def test_reference_segmentor_predicts_the_reference_way(seg_model, golden):
    """The reference segmentor (what the speed benchmarks compare with) predicts as the reference does: two
    encoder passes per window, one window at a time, labels equal to ours."""
    ref = ReferenceSegInference.like(seg_model, load_seg_config(VOC_CFG).data_preprocessor)
    image, meta = golden["inputs"]["img_rect"], dict(ori_shape=(300, 400), img_shape=(448, 592))
    with torch.no_grad(), encoder_passes(seg_model) as passes:
        theirs = ref.predict(image, [SegDataSample(metainfo=dict(meta))])[0]
        ref_passes = list(passes)
        ours = seg_model.predict(image, [SegDataSample(metainfo=dict(meta))])[0]
    windows = slide_windows(448, 592, seg_model.test_cfg.crop_size, seg_model.test_cfg.stride)
    assert ref_passes == [1] * 2 * len(windows) and passes[len(ref_passes):] == [len(windows)]
    assert torch.equal(theirs.pred_sem_seg.data, ours.pred_sem_seg.data)


def test_encode_decode_equals_reference_two_passes(seg_model, golden):
    ref = ReferenceSegInference.like(seg_model, load_seg_config(VOC_CFG).data_preprocessor)
    metas = [dict(ori_shape=(448, 592), img_shape=(448, 592))]
    image = golden["inputs"]["img_rect"]
    with torch.no_grad():
        ours = seg_model.encode_decode(image, metas)
        with reference_faithful():
            theirs = ref.encode_decode(image, metas)
            groups = ref.get_attn_maps(image)[-1][0]  # [H, W, G]
    top2 = groups.topk(2, dim=-1).values
    stable = (top2[..., 0] - top2[..., 1]) > 1e-4  # pixels whose group cannot flip between kernels
    assert stable.float().mean() > 0.99
    assert (ours - theirs).abs()[..., stable].max() < 1e-5
    with torch.no_grad():
        sample = SegDataSample(metainfo=dict(metas[0]))
        with reference_faithful():
            label_ref = ref.predict(image, [sample])[0].pred_sem_seg.data
        label = seg_model.predict(image, [SegDataSample(metainfo=dict(metas[0]))])[0].pred_sem_seg.data
    assert (label != label_ref).sum() <= (~stable).sum()


def mixed_text(batch: int = 4) -> torch.Tensor:
    """[B, 4, 77]: captions of very different lengths (one of 77 tokens) and short prompts."""
    g = torch.Generator().manual_seed(3)
    text = torch.zeros(batch, 4, 77, dtype=torch.long)
    for b in range(batch):
        for s, n in enumerate([(3, 75, 20, 9)[b % 4], 6, 8 + b, 5]):
            text[b, s, 0] = 49406
            text[b, s, 1:n + 1] = torch.randint(1, 49406, (n,), generator=g)
            text[b, s, n + 1] = 49407
    return text


def train_pass(model, image, text, faithful: bool):
    torch.manual_seed(0)  # the same Gumbel noise and DropPath masks
    with reference_faithful() if faithful else torch.enable_grad():
        losses = model.forward_train(image, text)
    sum(losses.values()).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return losses, grads


def test_training_pass_equals_reference_faithful(tiny_model):
    model = copy.deepcopy(tiny_model).train()
    image = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    text = mixed_text()
    ours, our_grads = train_pass(model, image, text, faithful=False)
    theirs, their_grads = train_pass(model, image, text, faithful=True)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=2e-5, rtol=1e-5)
    assert set(our_grads) == set(their_grads)
    for name, grad in our_grads.items():  # float32 rounding (measured: at most 3e-5, 2e-5 of the scale)
        ref = their_grads[name]
        assert (grad - ref).abs().max() <= 1e-4 * ref.abs().max() + 1e-5, name


def test_text_tower_runs_only_the_used_positions(tiny_model):
    text = mixed_text()
    with torch.no_grad():
        ours = tiny_model.encode_text(text, as_dict=True)
        single = tiny_model.encode_text(text[:, 0])
        with reference_faithful():
            theirs = tiny_model.encode_text(text, as_dict=True)
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(single, ours["text_x"], atol=2e-6, rtol=1e-5)
    assert [used_length(torch.tensor([e]), 77) for e in (0, 7, 8, 40, 71, 72, 76)] == [8, 8, 16, 48, 72, 77, 77]
    assert used_length(torch.zeros(0, dtype=torch.long), 77) == 77


@pytest.mark.parametrize("shape", [(6, 32), (3, 5, 32)])
def test_linear_projector_equals_conv1d(shape):
    torch.manual_seed(0)
    ours = ProjectMLP(32, 64, 16).train()
    theirs = copy.deepcopy(ours)
    x = torch.randn(shape, requires_grad=True)
    out, ref = ours(x), reference_project(theirs, x)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    grad, ref_grad = torch.autograd.grad(out.square().sum(), x)[0], torch.autograd.grad(ref.square().sum(), x)[0]
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-5)
    for name, value in ours.state_dict().items():  # the same BatchNorm statistics (pooled over batch and tokens)
        torch.testing.assert_close(value, theirs.state_dict()[name], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_attention_kernels_agree(causal):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 8, generator=g, requires_grad=True) for _ in range(3))
    fused = attention(q, k, v, 0.3, is_causal=causal)
    written = explicit_attention(q, k, v, 0.3, is_causal=causal)
    torch.testing.assert_close(fused, written, atol=1e-6, rtol=1e-5)
    low = [t.detach().bfloat16().requires_grad_() for t in (q, k, v)]
    out = attention(*low, 0.3, is_causal=causal)  # the CPU bf16 training path (explicit)
    out.float().sum().backward()
    torch.testing.assert_close(out.float(), written.detach(), atol=3e-2, rtol=3e-2)
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in low)


def test_autocast_keeps_losses_and_assignments_in_float32(tiny_model):
    image = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = tiny_model.forward_train(image, mixed_text(2))
        attn = tiny_model.img_encoder(image, return_attn=True, as_dict=True)["attn_dicts"]
    assert all(v.dtype == torch.float32 for v in losses.values())
    assert attn[0]["soft"].dtype == attn[0]["hard"].dtype == torch.float32


def test_compile_towers_keeps_the_checkpoint_layout(tiny_model):
    model = copy.deepcopy(tiny_model)
    keys = list(model.state_dict())
    model.compile_towers()
    assert list(model.state_dict()) == keys
    assert all(m._compiled_call_impl is not None for m in (model.img_encoder, model.text_encoder.transformer,
                                                            model.img_projector, model.text_projector))
