"""benchmarks/quickstart_sweep.py runs end to end on the CPU, and its group oracle is the majority-label rule."""

import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import quickstart_sweep
finally:
    sys.path.remove(str(ROOT / "benchmarks"))


def test_sweep_runs_and_reports(tmp_path):
    results = quickstart_sweep.main(["--variants", "base", "one_stage", "--budget", "0.5", "--train-samples", "32",
                                     "--seg-images", "6", "--batch-size", "4", "--workers", "1", "--device", "cpu",
                                     "--out-dir", str(tmp_path)])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["name"] for r in saved] == ["base", "one_stage"] == [r["name"] for r in results]
    for r in saved:
        assert r["steps"] >= 21 and r["history"][0]["step"] == 0 and r["history"][-1]["step"] == r["steps"]
        for h in r["history"]:
            assert 0 <= h["mIoU"] <= 100 and 0 <= h["oracle"] <= 100
            assert 1 <= h["groups"] <= 8  # both variants end in 8 groups
    assert "| base |" in (tmp_path / "results.md").read_text()


def test_oracle_takes_each_groups_majority_class():
    groups = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]])  # 4 x 4 pixels, 3 groups (+1 empty)
    gt = torch.tensor([[1, 1, 0, 3], [1, 0, 3, 3], [0, 0, 0, 2], [0, 0, 2, 2]])
    oracle = quickstart_sweep.majority_labels(groups.view(1, -1), gt.view(1, -1), 4, 4).view(4, 4)
    expected = np.array([[1, 1, 3, 3], [1, 1, 3, 3], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert (oracle.numpy() == expected).all()
