"""Training that would be silently wrong is refused in one line, before it trains: resuming a checkpoint under
another global batch or accumulation (its schedule and its place in the data would not fit), an accumulation
longer than an epoch (no optimizer step at all), a batch larger than the training set (a sample twice in one
contrastive batch)."""

from __future__ import annotations

import pytest
from helpers_train_data import write_tiny_setup

import main_group_vit
from datasets.builder import build_train_loader
from utils.config import load_config
from utils.errors import UserError

NO_EVAL = {"evaluate.task": [], "checkpoint.save_steps": 1}


@pytest.mark.slow
def test_a_checkpoint_resumes_only_under_its_own_global_batch(tmp_path):
    """After epoch 0 of a run with batch 2: resuming with batch 4, with 2 accumulation steps, or from
    ckpt_epoch_0.pth with batch 1 is refused, the checkpoints as they were (test_train resumes the same batch)."""
    cfg = write_tiny_setup(tmp_path, epochs=2, train_length=8, extra=NO_EVAL)
    out = tmp_path / "out"
    main_group_vit.main(["--cfg", str(cfg), "--output", str(out), "--opts", "train.epochs=1"])
    checkpoints = {p.name: p.read_bytes() for p in out.glob("*.pth")}
    common = ["--cfg", str(cfg), "--output", str(out)]
    refusals = [(["--batch-size", "4"], "4 samples per process x 1 process"),
                (["--opts", "train.accumulation_steps=2"], "x 2 accumulation step"),
                (["--batch-size", "1", "--resume", str(out / "ckpt_epoch_0.pth"), "--opts",
                  "checkpoint.auto_resume=false"], "1 samples per process")]
    for extra, ours in refusals:
        with pytest.raises(UserError, match=rf"was saved after epoch 0 with 2 samples per process x 1 process\(es\) "
                                            rf"x 1 accumulation step\(s\); this run has .*{ours}"):
            main_group_vit.main([*common, *extra])
    assert {p.name: p.read_bytes() for p in out.glob("*.pth")} == checkpoints


def test_an_accumulation_longer_than_an_epoch_is_refused(tmp_path):
    cfg = write_tiny_setup(tmp_path, train_length=6, extra={**NO_EVAL, "train.accumulation_steps": 4})
    with pytest.raises(UserError, match=r"train.accumulation_steps 4 is more than the 3 iterations of an epoch"):
        main_group_vit.main(["--cfg", str(cfg), "--output", str(tmp_path / "out")])
    assert not list((tmp_path / "out").glob("*.pth"))


@pytest.mark.parametrize("batch, world_size", [(8, 1), (3, 2)], ids=["one-process", "over-the-processes"])
def test_a_batch_larger_than_the_training_set_is_refused(tmp_path, batch, world_size):
    """5 samples: a batch of 8, or of 3 on each of 2 processes (each fits, the global batch of 6 does not)."""
    cfg = load_config(write_tiny_setup(tmp_path, train_length=5, batch_size=batch))
    with pytest.raises(UserError, match=rf"a batch of {batch} x {world_size} process\(es\) is more than the 5 "
                                        r"training samples .*false negative"):
        build_train_loader(cfg.data, rank=0, world_size=world_size)
