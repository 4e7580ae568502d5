"""Gradient accumulation with the feature cache: one optimizer step over K micro-batches is one step of the K x B
batch, for both losses, in one process and in two (gloo); summing per-micro-batch losses is not."""

import copy
import subprocess
import sys

import pytest
import torch
from helpers_accumulation import make_batch, split, tiny_model
from helpers_train_data import write_tiny_setup
from test_distributed import ROOT, clean_env, free_port

import main_group_vit
from models.multi_label_contrastive import MultiLabelContrastive
from training.precision import FP32
from training.step import accumulated_step, check_model, train_step
from utils.errors import UserError


def sgd_step(model, run) -> dict[str, torch.Tensor]:
    """The weight changes of one SGD step (lr 1, so they are minus the gradients) of a copy of ``model``."""
    model = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    run(model, optimizer, torch.amp.GradScaler("cpu", enabled=False))
    return {n: p.detach() - before[n] for n, p in model.named_parameters()}


def per_micro_batch_sum(model, optimizer, scaler, micro_batches) -> None:
    """The old accumulation: each micro-batch's own losses (its own negatives only), summed over micro-batches."""
    for batch in micro_batches:
        (sum(model(**batch).values()) / len(micro_batches)).backward()
    optimizer.step()


def assert_equal_steps(got: dict, expected: dict) -> None:
    scale = max(d.abs().max().item() for d in expected.values())
    for name, delta in expected.items():
        torch.testing.assert_close(got[name], delta, rtol=1e-4, atol=1e-5 * scale, msg=name)


def relative_difference(a: dict, b: dict) -> float:
    return (sum((a[n] - b[n]).norm() ** 2 for n in a) / sum(b[n].norm() ** 2 for n in b)).sqrt().item()


def test_four_micro_batches_of_four_are_one_batch_of_sixteen():
    model, batch = tiny_model(proj_num_layers=1), make_batch(16)
    losses = {}

    def big(m, o, s):
        losses["big"], _, _ = train_step(m, batch, o, s, FP32, clip_grad=None)

    def accumulated(m, o, s):
        losses["accumulated"], _, _ = accumulated_step(m, split(batch, 4), o, s, FP32, clip_grad=None)

    expected, got = sgd_step(model, big), sgd_step(model, accumulated)
    assert set(losses["big"]) == {"total_loss", "loss", "multi_label_loss"}
    for name, value in losses["big"].items():
        assert losses["accumulated"][name].item() == pytest.approx(value.item(), rel=1e-5), name
    assert expected["logit_scale"].abs() > 0 and expected["multi_label_logit_scale"].abs() > 0
    assert_equal_steps(got, expected)
    assert relative_difference(got, expected) < 1e-5

    old = sgd_step(model, lambda m, o, s: per_micro_batch_sum(m, o, s, split(batch, 4)))
    assert relative_difference(old, expected) > 0.05  # the test can tell the two apart


def test_replayed_forward_sees_the_same_noise_and_buffers_update_once(monkeypatch):
    """With drop path, Gumbel noise and BatchNorm: each micro-batch's second forward (with gradients) gives exactly
    the features of its first; the running statistics end as after one training forward of each micro-batch."""
    model, micro_batches = tiny_model(proj_num_layers=2, stochastic=True), split(make_batch(8), 2)
    reference = copy.deepcopy(model)
    torch.manual_seed(1)
    with torch.no_grad():
        for batch in micro_batches:
            reference.encode_for_loss(**batch)
    features = []
    real = type(model).encode_for_loss

    def recording(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        features.append({k: v.detach().clone() for k, v in out.items()})
        return out

    monkeypatch.setattr(type(model), "encode_for_loss", recording)
    torch.manual_seed(1)
    _, norm, finite = accumulated_step(model, micro_batches, torch.optim.SGD(model.parameters(), lr=0.0),
                                       torch.amp.GradScaler("cpu", enabled=False), FP32, clip_grad=None)
    assert finite and torch.isfinite(norm) and len(features) == 4  # 2 without gradients, then 2 with
    for first, second in zip(features[:2], features[2:], strict=True):
        assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(features[0]["image_x"], features[1]["image_x"])
    for (name, buffer), expected in zip(model.named_buffers(), reference.buffers(), strict=True):
        assert torch.equal(buffer, expected), name


class Toy(torch.nn.Module):
    """Features 'x' = w * image; loss = sum(x * text)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))

    def encode_for_loss(self, image, text):
        return {"x": self.w * image, "text": text}

    def losses_from_features(self, features):
        return {"loss": (features["x"] * features["text"]).sum()}


def test_a_non_finite_micro_batch_skips_the_whole_step():
    model = Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    good = {"image": torch.ones(2, 3), "text": torch.ones(2, 3)}
    bad = {"image": torch.full((2, 3), float("nan")), "text": torch.ones(2, 3)}
    losses, norm, finite = accumulated_step(model, [good, bad], optimizer, torch.amp.GradScaler("cpu", enabled=False),
                                            FP32, clip_grad=None)
    assert not finite and not torch.isfinite(norm) and not torch.isfinite(losses["total_loss"])
    assert torch.equal(model.w.detach(), torch.ones(3)) and model.w.grad is None and not optimizer.state


class ForwardOnly(torch.nn.Module):
    """A model with a training forward but without the two halves accumulation runs apart."""

    def __init__(self, outputs=lambda w: {"loss": w.sum()}):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(3))
        self.outputs = outputs

    def forward(self, image, text):
        return self.outputs(self.w * image)


def test_the_model_contract_is_checked_with_one_line():
    check_model(ForwardOnly(), accumulation_steps=1)
    check_model(Toy(), accumulation_steps=4)
    with pytest.raises(UserError) as info:
        check_model(ForwardOnly(), accumulation_steps=4)
    assert str(info.value) == ("train.accumulation_steps=4 needs a model with encode_for_loss and "
                               "losses_from_features: ForwardOnly lacks encode_for_loss and losses_from_features")
    batch = {"image": torch.ones(3), "text": torch.zeros(3)}
    for outputs, returned in ((lambda x: {"x": x.sum()}, "the entries ['x']"), (lambda x: x.sum(), "a Tensor")):
        model = ForwardOnly(outputs)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(UserError) as info:
            train_step(model, batch, optimizer, torch.amp.GradScaler("cpu", enabled=False), FP32, clip_grad=None)
        assert str(info.value) == ("the model's training forward must return a dict with a loss (an entry whose "
                                   f"name contains 'loss'); it returned {returned}")


def test_a_run_checks_the_model_before_training(tmp_path, monkeypatch):
    """Accumulation with a model that lacks losses_from_features stops the run before its first step: one line,
    nothing written."""
    cfg = write_tiny_setup(tmp_path, extra={"train.accumulation_steps": 2, "evaluate.task": []})
    monkeypatch.delattr(MultiLabelContrastive, "losses_from_features")
    with pytest.raises(UserError, match="^train.accumulation_steps=2 needs a model with encode_for_loss and "
                                        "losses_from_features: MultiLabelContrastive lacks losses_from_features$"):
        main_group_vit.main(["--cfg", str(cfg), "--output", str(tmp_path / "out")])
    assert not list((tmp_path / "out").glob("*.pth")) and not (tmp_path / "out" / "config.yml").exists()


@pytest.mark.slow
def test_two_processes_accumulating_are_one_batch_of_sixteen(tmp_path):
    """2 gloo processes x 2 micro-batches of 4 == one process with the batch of 16 (both losses gather across
    processes; the gradients are averaged over them)."""
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), "tests/helpers_accumulation.py", str(tmp_path)],
        cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    model, batch = tiny_model(proj_num_layers=1), make_batch(16)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    after = torch.load(tmp_path / "weights.pt", weights_only=True)
    expected = sgd_step(model, lambda m, o, s: train_step(m, batch, o, s, FP32, clip_grad=None))
    assert_equal_steps({n: after[n] - before[n] for n in before}, expected)
