"""One training step: forward, backward, gradient clipping and the optimizer step, with non-finite values kept away
from the weights (decided on the device: the host never waits for it); ``NonFiniteGuard`` counts the skipped steps
and stops a run that keeps producing them.

``train_step`` runs one batch. ``accumulated_step`` runs K micro-batches as one batch of K x B with the feature
cache method: the losses are contrastive, so each sample's loss depends on every other sample of the batch (its
negatives) and summing per-micro-batch losses is not the loss of the big batch. Instead:

1. every micro-batch is encoded without gradients (features only: a few hundred floats per sample);
2. the losses are computed over all cached features together (under torch.distributed: against every process's
   features, as for one big batch) and back-propagated to the features, and to the logit scales;
3. every micro-batch is encoded again, with gradients and the same random state as in 1 (DropPath, Gumbel noise),
   and its slice of the feature gradients is back-propagated through the towers.

The gradient is that of one batch of K x B, at the memory of one micro-batch plus the features, for about one more
forward pass per step. BatchNorm (the projectors with ``proj_num_layers`` > 1) normalises each micro-batch by its
own statistics, as per-GPU BatchNorm normalises each GPU's batch; the running statistics are updated once per
micro-batch (by pass 3), as with K separate steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from training.precision import Precision
from training.rng import set_torch_rng_state, torch_rng_state
from utils.distributed import all_reduce_sum, get_world_size, is_dist, unwrap
from utils.errors import UserError

Batch = Mapping[str, Any]
# the run's step, chosen once (training.loop.build_step): micro-batches -> (losses, pre-clip gradient norm, finite)
Step = Callable[[Sequence[Batch]], tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]]
LOSS_FEATURE_METHODS = ("encode_for_loss", "losses_from_features")


def check_model(model: nn.Module, accumulation_steps: int) -> None:
    """What a model trained by ``training.train`` must do, checked when the run is built (the forward's outputs when
    the first step reads them); a model that falls short gets a one-line ``UserError`` naming what it lacks.

    - In training mode, ``model(**batch)`` (the loader's batch: 'image' [B, 3, H, W], 'text' [B, 77] or
      [B, 1+M, 77], 'text_lengths') returns a dict of 0-dim tensors. Every entry whose name contains 'loss' is a loss
      term: their sum, logged as 'total_loss', is what is back-propagated. Every entry is averaged, logged and kept in
      the history, so a new loss term is one more '..._loss' entry.
    - With ``train.accumulation_steps`` > 1 (``accumulated_step``) the model also provides
      ``encode_for_loss(**batch)``, a dict of features each [B, ...], and ``losses_from_features(features)``, the
      forward's dict from those features concatenated over the micro-batches ([K*B, ...]); the forward is
      ``losses_from_features(encode_for_loss(**batch))``.
    - Its parameters are on one device; any state its forward updates (BatchNorm statistics) is a buffer, put back
      after a non-finite step.
    """
    module = unwrap(model)
    missing = [name for name in LOSS_FEATURE_METHODS if not callable(getattr(module, name, None))]
    if missing and accumulation_steps > 1:
        raise UserError(f"train.accumulation_steps={accumulation_steps} needs a model with "
                        f"{' and '.join(LOSS_FEATURE_METHODS)}: {type(module).__name__} lacks {' and '.join(missing)}")


def finite_everywhere(value: torch.Tensor) -> torch.Tensor:
    """Whether ``value`` is finite in every process, as a 0-dim bool tensor on its device (an all-reduce under
    torch.distributed, so that all agree; nothing is read back to the host)."""
    bad = (~torch.isfinite(value.detach())).any().float().reshape(1)
    if is_dist():
        all_reduce_sum(bad)
    return bad[0] == 0


def _losses(outputs: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The detached losses with 'total_loss' (the sum of every output whose name contains 'loss': ``check_model``)
    first, and the total itself."""
    if not isinstance(outputs, Mapping) or not any("loss" in k for k in outputs):
        got = f"the entries {sorted(outputs)}" if isinstance(outputs, Mapping) else f"a {type(outputs).__name__}"
        raise UserError("the model's training forward must return a dict with a loss (an entry whose name contains "
                        f"'loss'); it returned {got}")
    total = sum(v for k, v in outputs.items() if "loss" in k)
    return {"total_loss": total.detach(), **{k: v.detach() for k, v in outputs.items()}}, total


def _restore(buffers: Sequence[tuple[torch.Tensor, torch.Tensor]], keep: torch.Tensor | bool = False) -> None:
    """Put the buffers (BatchNorm statistics) back to their copies, unless the 0-dim bool ``keep`` is true."""
    with torch.no_grad():
        for buffer, before in buffers:
            buffer.copy_(torch.where(torch.as_tensor(keep, device=buffer.device), buffer, before))


def clip_and_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                  clip_grad: float | None, finite: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscale, clip to ``clip_grad`` (None or 0: measure only) and step, unless ``finite`` (the loss's) is false or
    the gradient norm is not finite; clears the gradients. Returns the pre-clip norm and whether the step was taken
    (0-dim tensors on the device)."""
    with torch.no_grad():
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if grads:  # a non-finite loss skips the step: through the norm, and the scaler's own overflow check
            grads[0].masked_fill_(~finite, float("nan"))
    scaler.unscale_(optimizer)
    max_norm = clip_grad if clip_grad else float("inf")  # inf: measure the norm without clipping
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    if scaler.is_enabled():
        scaler.step(optimizer)
        scaler.update()
        finite_step = finite
    else:
        finite_step = torch.isfinite(grad_norm)
        skip_unless(optimizer, finite_step)
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, finite_step


def train_step(model: nn.Module, batch: Batch, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
               precision: Precision, clip_grad: float | None,
               ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Forward, backward, clip + optimizer step of one batch; returns the losses, the pre-clip grad norm and whether
    the iteration was finite (a 0-dim bool tensor), all on the device.

    Non-finite values never reach the model, and the host never waits for the device to find out (the decisions are
    device tensors): a loss that is non-finite (in any process) leaves the buffers its forward updated (BatchNorm
    statistics) as they were, and its gradients are made NaN so that the step is skipped; a non-finite gradient
    norm skips the step too. A skipped step leaves the weights, the AdamW moments and step counts alone (fused
    AdamW's ``found_inf``; another optimizer is stepped when the host has read the norm). Such an iteration returns
    finite = False (its norm is non-finite). With the fp16 grad scaler, a non-finite norm is its routine overflow:
    the scaler skips that step itself and lowers its scale, and the iteration counts as finite unless its loss was
    not (which lowers the scale too).
    """
    device = next(unwrap(model).parameters()).device
    buffers = [(b, b.clone()) for b in unwrap(model).buffers()]
    with precision.autocast(device):
        outputs = model(**batch)
    losses, total = _losses(outputs)
    finite = finite_everywhere(total)
    scaler.scale(total).backward()
    _restore(buffers, keep=finite)
    return losses, *clip_and_step(model, optimizer, scaler, clip_grad, finite)


def _average_gradients(model: nn.Module) -> None:
    """Mean of the gradients over processes (what DDP does in its backward), in one all-reduce."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])  # [number of parameters]
    dist.all_reduce(flat)
    flat /= get_world_size()
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def accumulated_step(model: nn.Module, micro_batches: Sequence[Batch], optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, precision: Precision, clip_grad: float | None,
                     ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """One optimizer step on the concatenation of ``micro_batches`` with the feature cache (module docstring);
    returns the losses of the whole batch, the pre-clip gradient norm and the finite flag, as ``train_step`` does.

    The model (unwrapped from DDP, whose gradient hooks stay idle; the gradients are averaged over processes here)
    provides ``encode_for_loss(**batch)`` and ``losses_from_features(features)`` (``check_model``). A
    non-finite loss skips the step and leaves the weights and buffers as they were (the host reads that flag once
    per accumulated step, to spare the second pass).
    """
    module = unwrap(model)
    device = next(module.parameters()).device
    buffers = [(b, b.clone()) for b in module.buffers()]
    states, cached = [], []
    with torch.no_grad():  # 1. the features of every micro-batch
        for batch in micro_batches:
            states.append(torch_rng_state(device))
            with precision.autocast(device):
                cached.append(module.encode_for_loss(**batch))
    end_state = torch_rng_state(device)
    _restore(buffers)  # the running statistics are updated by pass 3 only
    sizes = [len(next(iter(features.values()))) for features in cached]
    features = {name: torch.cat([f[name] for f in cached]).requires_grad_() for name in cached[0]}  # [K*B, ...]
    losses, total = _losses(module.losses_from_features(features))  # 2. the losses of the whole batch
    finite = finite_everywhere(total)
    if not finite:
        optimizer.zero_grad(set_to_none=True)
        return losses, torch.full((), float("nan"), device=device), finite
    scaler.scale(total).backward()
    names = [name for name, value in features.items() if value.grad is not None]
    grads = {name: features[name].grad.split(sizes) for name in names}
    for k, batch in enumerate(micro_batches):  # 3. the towers' gradients, one micro-batch at a time
        set_torch_rng_state(states[k], device)
        with precision.autocast(device):
            outputs = module.encode_for_loss(**batch)
        torch.autograd.backward([outputs[name] for name in names], [grads[name][k] for name in names])
    set_torch_rng_state(end_state, device)
    if is_dist() and get_world_size() > 1:
        _average_gradients(module)
    return losses, *clip_and_step(module, optimizer, scaler, clip_grad, finite)


def compile_forward(model: nn.Module, length_multiple: int, backend: str = "inductor") -> None:
    """``train.compile``: the model's forward (``forward_train`` in training) compiled in place with
    ``fullgraph=True`` (the text lengths come from the host, so nothing breaks the graph) and ``dynamic=False``: one
    graph per (caption, prompt) length bucket of ``length_multiple``, and dynamo may keep them all."""
    import torch._dynamo

    buckets = (-(-77 // length_multiple) + 1) ** 2
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, buckets)
    model.compile(fullgraph=True, dynamic=False, backend=backend)


def skip_unless(optimizer: torch.optim.Optimizer, take: torch.Tensor) -> None:
    """``optimizer.step()`` when the 0-dim bool ``take`` is true: decided on the device for an optimizer that takes
    a ``found_inf`` flag (fused AdamW: weights, moments and step counts unchanged otherwise), else on the host."""
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf = (~take).float()
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif take:
        optimizer.step()


class NonFiniteGuard:
    """Counts the iterations whose loss or gradient norm was non-finite (their steps were skipped); ``limit`` in a
    row (0: no limit) stop the run with a UserError naming the iteration and ``last_checkpoint``."""

    def __init__(self, limit: int, last_checkpoint: str | None = None):
        self.limit = limit
        self.last_checkpoint = last_checkpoint  # the newest complete checkpoint of the run, for the stop message
        self.in_a_row = 0
        self.in_epoch = 0

    def start_epoch(self) -> None:
        self.in_epoch = 0

    def update(self, finite: bool, iteration: int, where: str) -> None:
        """Record one iteration (``where``: e.g. 'epoch 1, step 3/10')."""
        if finite:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.in_epoch += 1
        if self.limit and self.in_a_row >= self.limit:
            last = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else \
                "no checkpoint was saved yet"
            raise UserError(f"training stopped at iteration {iteration} ({where}): {self.in_a_row} non-finite losses "
                            f"or gradient norms in a row (train.max_nonfinite_steps={self.limit}); {last}")
