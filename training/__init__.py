"""The pretraining engine (the reference's main_group_vit.py, split by idea), one idea per module:

- ``run``: ``train(cfg, ...)`` and ``evaluate(cfg, ...)``, the two verbs of ``main_group_vit.py``: build the run,
  then loop over epochs; ``train`` returns the run's ``History``.
- ``state``: ``RunState`` (everything a run carries from step to step) and ``History`` (per-step losses,
  per-epoch metrics).
- ``precision``: the mixed-precision choice (``train.amp``).
- ``rng``: seeding of the process RNGs.
- ``step``: the model's contract with the engine (``check_model``), one training step (forward, backward, clip,
  optimizer step), the accumulated step, and the non-finite-step guard; ``graphs``: the step as CUDA graphs.
- ``loop``: the run's step (chosen once), one epoch of steps, and the epochs with their evaluation and
  checkpoints.
- ``readings``: what each step measured, read from the device once per log line: meters, history, warnings.
- ``epoch_log``: what an epoch shows: the progress bar and its log lines.
- ``zero_shot_cls``: zero-shot classification (``evaluate_cls``), the one classifier.
- ``epoch_evaluation``: what a run evaluates at an epoch's end (classification, and segmentation when asked).
- ``checkpointing``: the training state as a checkpoint, the saves after a step and after an epoch, resuming.
- ``reporting``: scalars to TensorBoard and Weights & Biases.

Reliability: every epoch reseeds the RNGs from (seed, rank, epoch) and the loader restarts its stream from the
epoch's seeds, so an epoch's losses depend only on the weights and optimizer state it starts from: a run resumed
from a checkpoint repeats an uninterrupted run exactly (on the same hardware and settings). A step with a non-finite
loss or gradient norm leaves the weights alone and is counted (``NonFiniteGuard``).
"""

from training.run import evaluate, train
from training.state import History

__all__ = ["History", "evaluate", "train"]
