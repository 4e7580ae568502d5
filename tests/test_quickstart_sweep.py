"""benchmarks/quickstart_sweep.py runs end to end on the CPU; the grouping diagnostics compute what they claim."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from segmentation.evaluation.diagnostics import hard_chain, majority_labels

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import quickstart_sweep
finally:
    sys.path.remove(str(ROOT / "benchmarks"))


TINY = ["--train-samples", "48", "--epochs", "2", "--seg-images", "4", "--cls-images", "4", "--workers", "1",
        "--threads", "2", "--opts", "data.batch_size=16", "print_freq=1", "data.num_workers=0",
        "data.shuffle_buffer=16"]


@pytest.mark.slow
def test_sweep_runs_the_quickstart_and_reports(tmp_path):
    """A row is the quickstart's own run (its results file, its curves) plus the extra evaluations."""
    results = quickstart_sweep.main(["--variants", "chosen", *TINY, "--out-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["name"] for r in saved] == ["chosen"] == [r["name"] for r in results]
    (r,) = saved
    run = json.loads((tmp_path / "chosen" / "quickstart_results.json").read_text())
    assert (r["mIoU"], r["mIoU_untrained"], r["top1"], r["bound"]) == \
        (run["miou"], run["miou_untrained"], run["top1"], run["bound"])
    assert r["steps"] == 2 * 48 // 16 and [epoch for epoch, _ in r["mIoU_per_epoch"]] == [0, 1, 2]
    assert r["val_bg"] in quickstart_sweep.BG_THRESHOLDS and r["bg"] == 0.7  # configs/quickstart.yml's
    for key in ("mIoU_val_bg", "mIoU_seed2"):
        assert 0 <= r[key] <= 100
    assert "| chosen |" in (tmp_path / "results.md").read_text()


def test_oracle_takes_each_groups_majority_class():
    groups = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]])  # 4 x 4 pixels, 3 groups (+1 empty)
    gt = torch.tensor([[1, 1, 0, 3], [1, 0, 3, 3], [0, 0, 0, 2], [0, 0, 2, 2]])
    oracle = majority_labels(groups.view(1, -1), gt.view(1, -1), 4, 4).view(4, 4)
    expected = np.array([[1, 1, 3, 3], [1, 1, 3, 3], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert (oracle.numpy() == expected).all()


def test_hard_chain_follows_both_stages():
    # stage 0: 4 tokens -> 3 groups; stage 1: 3 groups -> 2 groups (one-hot maps [B, 1, groups, tokens])
    stage0 = torch.tensor([[0, 2, 1, 2]])
    stage1 = torch.tensor([[1, 0, 1]])
    as_map = lambda index, groups: {"hard": torch.nn.functional.one_hot(index, groups).transpose(1, 2)[:, None]}  # noqa: E731
    assert hard_chain([as_map(stage0, 3), as_map(stage1, 2), None]).tolist() == [[1, 1, 0, 1]]


@pytest.mark.slow
def test_segmentation_emerges_in_a_reduced_quickstart(tmp_path):
    """The quickstart design, 78 steps of 128 pairs run by the quickstart itself: zero-shot segmentation at the
    run's own background threshold must rise far above all-background and the untrained model, hold on a second
    world seed, and the group labels must follow the groups (chance: 1 in 8)."""
    (r,) = quickstart_sweep.main(["--variants", "chosen", "--train-samples", "5000", "--epochs", "2",
                                  "--seg-images", "100", "--cls-images", "100", "--workers", "2", "--threads", "2",
                                  "--out-dir", str(tmp_path)])
    floor = max(r["mIoU_chance"], r["mIoU_untrained"])
    assert r["mIoU"] >= floor + 15 and r["mIoU_seed2"] >= floor + 10
    assert r["grouping"]["label_agreement"] >= 40 and r["grouping"]["oracle_hard"] >= 50 and r["top1"] >= 70
