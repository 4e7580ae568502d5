"""Numerical faults: a non-finite loss or gradient never reaches the weights; it is counted, and too many in a row
stop the run with the iteration and the last good checkpoint named."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from helpers_train_data import write_tiny_setup

import main_group_vit
from models.multi_label_contrastive import MultiLabelContrastive
from training.precision import FP32
from training.step import NonFiniteGuard, train_step
from utils.errors import UserError


class Toy(torch.nn.Module):
    """loss = sum(w * image) + scale * sum(sqrt(w - text)): the second term's gradient is infinite where w == text."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((3,), 2.0))

    def forward(self, image, text):
        return {"loss": (self.w * image).sum(), "sqrt_loss": torch.sqrt(self.w - text).sum()}


def step_once(batch: dict, scaler: torch.amp.GradScaler | None = None, fused: bool = False):
    model = Toy()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=fused or None)
    scaler = scaler or torch.amp.GradScaler("cpu", enabled=False)
    losses, norm, finite = train_step(model, batch, optimizer, scaler, FP32, clip_grad=5.0)
    return model, optimizer, losses, norm, finite


def no_step_taken(optimizer: torch.optim.Optimizer) -> bool:
    """No AdamW state, or (fused AdamW, which creates it before it can skip on the device) step 0 and zero moments."""
    return all(int(s["step"]) == 0 and not s["exp_avg"].any() and not s["exp_avg_sq"].any()
               for s in optimizer.state.values())


def test_finite_step_updates_the_weights():
    model, optimizer, losses, norm, finite = step_once({"image": torch.ones(3), "text": torch.zeros(3)})
    assert torch.isfinite(norm) and finite and not torch.equal(model.w.detach(), torch.full((3,), 2.0))
    assert optimizer.state[model.w]["step"] == 1


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("image", [float("nan"), float("inf")])
def test_non_finite_loss_is_not_backpropagated_nor_stepped(image, fused):
    model, optimizer, losses, norm, finite = step_once({"image": torch.full((3,), image), "text": torch.zeros(3)},
                                                       fused=fused)
    assert not torch.isfinite(losses["total_loss"]) and not finite and not torch.isfinite(norm)
    assert torch.equal(model.w.detach(), torch.full((3,), 2.0)) and model.w.grad is None
    assert no_step_taken(optimizer) and (fused or not optimizer.state)


@pytest.mark.parametrize("fused", [False, True])
def test_non_finite_gradient_skips_the_step(fused):
    model, optimizer, losses, norm, finite = step_once({"image": torch.ones(3), "text": torch.full((3,), 2.0)},
                                                       fused=fused)
    assert torch.isfinite(losses["total_loss"]) and not finite  # loss 3 + sqrt(0): finite; its gradient is not
    assert torch.equal(model.w.detach(), torch.full((3,), 2.0)) and model.w.grad is None
    assert no_step_taken(optimizer) and (fused or not optimizer.state)


class ToyNorm(Toy):
    """Toy with a BatchNorm1d whose running statistics every forward updates (NaN ones for a NaN image)."""

    def __init__(self):
        super().__init__()
        self.norm = torch.nn.BatchNorm1d(3)

    def forward(self, image, text):
        return {**super().forward(image, text), "norm_loss": self.norm(torch.stack([image, 2 * image])).sum() * 0}


@pytest.mark.parametrize("bad", [{"image": torch.full((3,), float("nan")), "text": torch.zeros(3)},
                                 {"image": torch.ones(3), "text": torch.full((3,), 2.0)}], ids=["loss", "gradient"])
def test_a_bad_step_after_good_ones_changes_nothing(bad):
    """Decided on the device (fused AdamW's found_inf): weights, moments, step counts and BatchNorm statistics stay."""
    model = ToyNorm()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    good = {"image": torch.tensor([1.0, 0.5, 0.25]), "text": torch.zeros(3)}
    for _ in range(2):
        train_step(model, good, optimizer, scaler, FP32, clip_grad=5.0)
    before = copy.deepcopy((model.state_dict(), optimizer.state_dict()))
    losses, norm, finite = train_step(model, bad, optimizer, scaler, FP32, clip_grad=5.0)
    assert not finite
    after = (model.state_dict(), optimizer.state_dict())
    assert all(torch.equal(after[0][k], before[0][k]) for k in before[0])  # incl. running_mean/var, batches tracked
    for index, state in before[1]["state"].items():
        assert all(torch.equal(after[1]["state"][index][k], state[k]) for k in state)  # step, exp_avg, exp_avg_sq
    assert all(int(s["step"]) == 2 for s in after[1]["state"].values())
    _, _, finite = train_step(model, good, optimizer, scaler, FP32, clip_grad=5.0)
    assert finite and all(int(s["step"]) == 3 for s in optimizer.state.values())


def test_grad_scaler_handles_its_own_overflow():
    """With a grad scaler (fp16 on CUDA), an infinite gradient is its routine overflow: it skips the step itself."""
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    model, optimizer, losses, norm, finite = step_once({"image": torch.ones(3), "text": torch.full((3,), 2.0)},
                                                       scaler)
    assert finite and not torch.isfinite(norm)  # the iteration counts, as not a skipped step
    assert torch.equal(model.w.detach(), torch.full((3,), 2.0)) and scaler.get_scale() == 2.0


def test_guard_counts_in_a_row_and_stops_with_the_checkpoint_named():
    guard = NonFiniteGuard(limit=3, last_checkpoint="out/ckpt_epoch_4.pth")
    for finite in (False, False, True, False, False):
        guard.update(finite, 10, "epoch 5, step 0/4")
    assert guard.in_a_row == 2 and guard.in_epoch == 4
    with pytest.raises(UserError, match=r"^training stopped at iteration 17 \(epoch 5, step 3/4\): 3 non-finite "
                                        r"losses or gradient norms in a row \(train.max_nonfinite_steps=3\); the last "
                                        r"good checkpoint is out/ckpt_epoch_4.pth$"):
        guard.update(False, 17, "epoch 5, step 3/4")
    unlimited = NonFiniteGuard(limit=0)
    for _ in range(100):
        unlimited.update(False, 0, "")
    with pytest.raises(UserError, match="no checkpoint was saved yet"):
        NonFiniteGuard(limit=1).update(False, 0, "epoch 0, step 0/1")


def nan_losses_at(monkeypatch, calls: set[int]) -> list[dict]:
    """Make the model's training forward return NaN losses at these call numbers (after its BatchNorm statistics got
    NaN too); returns the model state seen by each call."""
    real = MultiLabelContrastive.forward_train
    states: list[dict] = []

    def forward_train(self, image, text, **kwargs):
        states.append(copy.deepcopy(self.state_dict()))
        losses = real(self, image, text, **kwargs)
        if len(states) - 1 not in calls:
            return losses
        # in place, as a forward updates it (through .data: the step still runs its backward, which saved it)
        self.img_projector.linear_hidden[1].running_mean.data.fill_(float("nan"))
        return {k: v * float("nan") for k, v in losses.items()}

    monkeypatch.setattr(MultiLabelContrastive, "forward_train", forward_train)
    return states


def test_nan_steps_are_skipped_then_repeated_nans_stop_the_run(tmp_path, monkeypatch):
    """3 iterations per epoch; NaN at iterations 1 (isolated), 3 and 4 (two in a row = the limit)."""
    cfg = write_tiny_setup(tmp_path, epochs=3, train_length=6, extra={"evaluate.task": [],
                                                                       "train.max_nonfinite_steps": 2})
    out = tmp_path / "out"
    states = nan_losses_at(monkeypatch, {1, 3, 4})
    with pytest.raises(UserError) as info:
        main_group_vit.main(["--cfg", str(cfg), "--output", str(out)])
    last_good = out / "ckpt_epoch_0.pth"
    message = (f"training stopped at iteration 4 (epoch 1, step 1/3): 2 non-finite losses or gradient norms in a row "
               f"(train.max_nonfinite_steps=2); the last good checkpoint is {last_good}")
    assert str(info.value) == message and last_good.is_file() and not (out / "ckpt_epoch_1.pth").exists()

    assert len(states) == 5
    unchanged = [all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(states, states[1:], strict=False)]
    assert unchanged == [False, True, False, True]  # iterations 1 and 3 changed nothing, BatchNorm statistics included
    assert all(torch.isfinite(v).all() for v in torch.load(last_good, weights_only=True)["model"].values())
    log = (out / "log.txt").read_text()
    skipped = re.findall(r"Train: \[(\d)/3\]\[(\d)/3\]  non-finite loss \(nan\) or gradient norm: optimizer step "
                         r"skipped \((\d) in a row\)", log)
    assert skipped == [("0", "1", "1"), ("1", "0", "1"), ("1", "1", "2")]
    assert re.search(r"EPOCH 0 training takes .*; skipped: 0 bad samples of 6 read, 1 non-finite steps", log)
    assert f"ERROR: {message}" in log
