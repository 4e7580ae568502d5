"""Untrusted checkpoints end to end: ``--resume`` of a URL (or a file) holding a crafted pickle is refused by every
command before any of its code runs, and no checkpoint is ever read with plain unpickling.

(The loader itself is tested in test_checkpoint.py; the bad-input table runs the local-file case as subprocesses.)
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from helpers_train_data import write_tiny_setup

import main_group_vit
import main_seg
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
URL = "https://example.com/releases/group_vit_evil.pth"
spec = importlib.util.spec_from_file_location("demo_seg", ROOT / "demo" / "demo_seg.py")
demo_seg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo_seg)


class Payload:
    """Unpickling this creates ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def evil_url(tmp_path, monkeypatch) -> tuple[Path, list[str], list[object]]:
    """URL's download is a crafted checkpoint; returns the marker its code would create, the URLs downloaded and the
    ``weights_only`` argument of every torch.load call. Plain unpickling fails the test."""
    marker, evil = tmp_path / "PWNED", tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "config": Payload(marker)}, evil)
    downloads: list[str] = []
    loads: list[object] = []

    def download(url, dst, *args, **kwargs):
        downloads.append(url)
        shutil.copyfile(evil, dst)

    def spy_load(*args, **kwargs):
        loads.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    def plain_unpickling(*args, **kwargs):
        raise AssertionError("a checkpoint was read with plain unpickling")

    real_load = torch.load
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    monkeypatch.setattr(torch, "load", spy_load)
    for name in ("load", "loads"):  # (torch.load's plain path uses pickle.Unpickler: the spy sees weights_only)
        monkeypatch.setattr(pickle, name, plain_unpickling)
    return marker, downloads, loads


def commands(tmp_path: Path) -> dict[str, tuple]:
    cfg = str(write_tiny_setup(tmp_path, extra={"evaluate.task": [], "data.num_workers": 0}))
    out = str(tmp_path / "out")
    image = str(ROOT / "demo" / "examples" / "coffee.jpg")
    return {
        "eval": (main_group_vit.main, ["--cfg", cfg, "--eval", "--resume", URL, "--output", out]),
        "train": (main_group_vit.main, ["--cfg", cfg, "--resume", URL, "--output", out]),
        "seg": (main_seg.main, ["--cfg", cfg, "--resume", URL, "--output", out]),
        "demo": (demo_seg.main, ["--resume", URL, "--input", image, "--output_dir", out]),
    }


@pytest.mark.parametrize("command", ["eval", "train", "seg", "demo"])
def test_resume_of_a_url_goes_through_the_safe_loader(tmp_path, evil_url, command):
    marker, downloads, loads = evil_url
    main, argv = commands(tmp_path)[command]
    cached = tmp_path / "hub" / "checkpoints" / "group_vit_evil.pth"
    with pytest.raises(UserError, match=f"^refusing to load {cached}: its pickle references .*system, which a "
                                        "checkpoint never needs; this file is not a trusted checkpoint$"):
        main(argv)
    assert downloads == [URL] and loads and all(w is True for w in loads)
    assert not marker.exists()
    # no config, checkpoint or result written (run.lock is the released lock of the one-run-per-folder rule)
    assert {p.name for p in (tmp_path / "out").iterdir()} <= {"log.txt", "run.lock"}
