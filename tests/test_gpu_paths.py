"""The pieces of the GPU training path that a CPU can check: text lengths known on the host, uint8 images normalised
on the device with the same values, the one-batch-ahead feeder, loader workers from the cores, a training step that
never makes the host wait for the device."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
from helpers_train_data import write_tiny_setup
from omegaconf import OmegaConf
from PIL import Image
from test_perf_equivalence import mixed_text

from datasets.builder import DeviceFeeder, DeviceImages, build_img_transform, build_train_loader, loader_workers
from models.transformer import text_lengths
from training.graphs import DeviceLR
from training.precision import FP32
from training.step import compile_forward, train_step
from utils.config import load_config
from utils.host_sync import HostSyncCounter
from utils.lr_scheduler import build_scheduler
from utils.optimizer import build_optimizer


def test_host_text_lengths_give_the_same_features(tiny_model):
    text = mixed_text()  # captions of 3-75 tokens, prompts of 5-11
    assert text_lengths(text) == (77, 16) and text_lengths(text[:, 0]) == (77, 0)
    assert text_lengths(text[[0, 2]], multiple=32) == (32, 32)  # captions of 3 and 20 tokens
    with torch.no_grad():
        ours = tiny_model.encode_text(text, as_dict=True)
        for multiple in (8, 32, 77):
            host = tiny_model.encode_text(text, lengths=text_lengths(text, multiple), as_dict=True)
            for name in ours:
                torch.testing.assert_close(host[name], ours[name], atol=2e-6, rtol=1e-5)


def test_forward_train_with_host_lengths_matches(tiny_model):
    model = copy.deepcopy(tiny_model).train()
    image = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    text = mixed_text()
    torch.manual_seed(0)
    reads = model.forward_train(image, text)
    torch.manual_seed(0)
    host = model(image, text, text_lengths=text_lengths(text, 16))
    for name in reads:
        torch.testing.assert_close(host[name], reads[name], atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_uint8_images_normalised_on_the_device_are_the_same(train):
    img_aug = OmegaConf.create({"deit_aug": True, "img_size": 32, "img_scale": [0.08, 1.0], "interpolation": "bilinear",
                                "color_jitter": 0.4, "auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.0,
                                "re_mode": "pixel", "re_count": 1})
    images = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)) for i in range(3)]
    outputs = []
    for uint8 in (False, True):
        transform = build_img_transform(train, img_aug, uint8=uint8)
        random.seed(0)
        np.random.seed(0)  # RandAugment picks its operations with numpy
        torch.manual_seed(0)
        outputs.append(torch.stack([transform(image) for image in images]))
    assert outputs[1].dtype == torch.uint8
    assert torch.equal(DeviceImages(train, img_aug, torch.device("cpu"))(outputs[1]), outputs[0])  # bit for bit


def test_device_images_erase_when_training():
    img_aug = OmegaConf.create({"deit_aug": True, "re_prob": 1.0, "re_mode": "pixel", "re_count": 1})
    batch = torch.full((4, 3, 16, 16), 128, dtype=torch.uint8)
    plain = DeviceImages(False, img_aug, torch.device("cpu"))(batch)
    erased = DeviceImages(True, img_aug, torch.device("cpu"))(batch)
    assert plain.dtype == torch.float32 and torch.equal(plain, plain[:1].expand_as(plain))
    assert all(not torch.equal(erased[i], plain[i]) for i in range(4))  # every image got a noise patch


def test_feeder_delivers_every_batch_with_its_text_lengths(tmp_path):
    cfg = load_config(write_tiny_setup(tmp_path, train_length=6, extra={"data.uint8_images": True}))
    loader = build_train_loader(cfg.data)
    reference = list(build_train_loader(cfg.data))
    feeder = DeviceFeeder(loader, torch.device("cpu"), DeviceImages(True, cfg.data.img_aug, torch.device("cpu")))
    batches = list(feeder)
    assert len(batches) == len(feeder) == len(reference) == 3 and feeder.counts.used == 6
    for batch, raw in zip(batches, reference, strict=True):
        assert reference[0]["image"].dtype == torch.uint8 and batch["image"].dtype == torch.float32
        assert torch.equal(batch["text"][:, 0], raw["text"][:, 0])  # the captions (noun prompts are random draws)
        assert batch["text_lengths"] == text_lengths(batch["text"])


def test_loader_workers_from_the_cores(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loader_workers(-1) == 15 and loader_workers(3) == 3 and loader_workers(0) == 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert loader_workers(-1) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert loader_workers(-1) == 3


def test_a_steady_state_training_step_reads_nothing_back(tiny_model):
    """The forward (host text lengths), the finite checks, the skip decision, clipping and fused AdamW: no operator
    whose result the host must wait for (on a GPU, each would stall the queue)."""
    model = copy.deepcopy(tiny_model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    text = mixed_text(2)
    batch = {"image": torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)), "text": text}
    lengths = text_lengths(text)  # the loader's side, on the host copy of the tokens
    train_step(model, {**batch, "text_lengths": lengths}, optimizer, scaler, FP32, clip_grad=5.0)
    with HostSyncCounter() as reads:
        losses, norm, finite = train_step(model, {**batch, "text_lengths": lengths}, optimizer, scaler, FP32,
                                          clip_grad=5.0)
        torch.stack([finite.float(), norm, *losses.values()])  # what the loop keeps until its next log line
    assert reads.total == 0, reads.counts
    with HostSyncCounter() as reads:  # the counter sees the reads: lengths from the device tokens are two
        train_step(model, batch, optimizer, scaler, FP32, clip_grad=5.0)
    assert reads.counts == {"_local_scalar_dense": 2}


@pytest.mark.slow
def test_train_compile_traces_the_training_forward_as_one_graph(tiny_model):
    """train.compile: fullgraph=True succeeds (no graph break) and gives the eager losses and gradients."""
    eager = copy.deepcopy(tiny_model).train()
    compiled = copy.deepcopy(tiny_model).train()
    compile_forward(compiled, length_multiple=16, backend="aot_eager")
    image = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    text = mixed_text(2)
    results = []
    for model in (eager, compiled):
        torch.manual_seed(0)
        losses = model(image, text, text_lengths=text_lengths(text, 16))
        sum(losses.values()).backward()
        results.append((losses, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (eager_losses, eager_grads), (losses, grads) = results
    for name in eager_losses:
        torch.testing.assert_close(losses[name], eager_losses[name], atol=1e-5, rtol=1e-5)
    assert grads.keys() == eager_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, eager_grads[name], atol=1e-5, rtol=1e-4)


def test_the_learning_rate_moves_through_its_device_tensor():
    """train.cuda_graph's DeviceLR: the scheduler's floats reach the optimizer through the same tensors (what a
    captured graph reads), step by step, and the weights follow exactly as with float rates."""
    cfg = OmegaConf.create({"epochs": 2, "warmup_epochs": 1, "base_lr": 0.1, "warmup_lr": 0.001, "min_lr": 0.01,
                            "lr_scheduler": {"name": "cosine"}, "optimizer": {"name": "adamw", "eps": 1e-8,
                                                                              "betas": [0.9, 0.999]},
                            "weight_decay": 0.05})
    torch.manual_seed(0)
    models = [torch.nn.Linear(4, 3) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [build_optimizer(cfg, m) for m in models]
    schedulers = [build_scheduler(cfg, o, iters_per_epoch=4) for o in optimizers]
    device_lr = DeviceLR(optimizers[1], torch.device("cpu"))
    tensors, seen = list(device_lr.tensors), []
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    for iteration in range(8):
        device_lr.to_device()
        assert all(g["lr"] is t for g, t in zip(optimizers[1].param_groups, tensors, strict=True))
        seen.append(float(tensors[0]))
        assert seen[-1] == pytest.approx(optimizers[0].param_groups[0]["lr"], rel=1e-6)
        for model, optimizer in zip(models, optimizers, strict=True):
            model(x).square().sum().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        device_lr.to_floats()
        for scheduler in schedulers:
            scheduler.step_update(iteration + 1)
    assert len(set(seen)) == 8 and seen[0] < seen[3]  # warmup up, then cosine: the rate moved every step
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
