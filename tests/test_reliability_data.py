"""Corrupt training data: bad samples are skipped, counted per epoch in the log, and too many stop the run."""

from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest
from helpers_train_data import jpeg_bytes, write_caption_shards, write_tiny_setup

import main_group_vit
from datasets.builder import build_train_loader
from utils.atomic_files import write_tar
from utils.config import load_config
from utils.config_schema import check_config
from utils.errors import UserError

EPOCH_LINE = re.compile(r"EPOCH (\d+) training takes .*; skipped: (\d+) bad samples of (\d+) read, (\d+) non-finite")
# One warning per kind of fault in broken_shards(), as SkipCorrupt words them: each names its shard.
FAULTS = {
    "undecodable image": r"in \S+/pairs-000000\.tar .*000001\.jpg: UnidentifiedImageError",
    "empty caption": r"in \S+/pairs-000000\.tar .*: ValueError: sample 000003, txt: ValueError: empty caption",
    "missing member": r"in \S+/pairs-000000\.tar .*: ValueError: sample 000004 has no text/txt member \(it has jpg\)",
    "truncated tar": r"in \S+/pairs-000001\.tar .*ReadError: unexpected end of data",
}


def good(index: int) -> dict[str, bytes]:
    return {"__key__": f"{index:06d}", "jpg": jpeg_bytes(index), "txt": f"a photo of thing {index}".encode()}


def broken_shards(folder: Path) -> int:
    """Shards 0-1 hold one fault of each kind among 6 good samples; shards 2-3 are good. Returns the good count."""
    write_tar(folder / "pairs-000000.tar", [
        good(0),
        {"__key__": "000001", "jpg": b"\xff\xd8 not really a jpeg", "txt": b"a broken image"},
        good(2),
        {"__key__": "000003", "jpg": jpeg_bytes(3), "txt": b"  \n"},
        {"__key__": "000004", "jpg": jpeg_bytes(4)},
        good(5),
    ])
    truncated = folder / "pairs-000001.tar"
    write_tar(truncated, [good(6), good(7), good(8)])
    with tarfile.open(truncated) as tar:
        last_image = tar.getmember("000008.jpg")
    truncated.write_bytes(truncated.read_bytes()[:last_image.offset_data + last_image.size // 2])
    write_caption_shards(folder, 2, 3, name="more")  # more-000000.tar, more-000001.tar
    for i, shard in enumerate(sorted(folder.glob("more-*.tar"))):
        shard.rename(folder / f"pairs-{i + 2:06d}.tar")
    return 4 + 2 + 6


def corrupt_setup(tmp_path: Path, **extra) -> Path:
    cfg = write_tiny_setup(tmp_path, epochs=2, train_length=12, batch_size=4,
                           extra={"evaluate.task": [], "data.shuffle_buffer": 0, **extra})
    assert broken_shards(tmp_path / "pairs") == 12
    return cfg


@pytest.mark.parametrize("num_workers", [0, 2])
def test_every_fault_is_skipped_and_counted_per_epoch(tmp_path, num_workers, warnings_of_the_loader):
    cfg = load_config(corrupt_setup(tmp_path, **{"data.num_workers": num_workers, "data.max_bad_fraction": 0.6}))
    loader = build_train_loader(cfg.data)
    per_epoch = []
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == 3 and all(b["image"].shape == (4, 3, 224, 224) for b in batches)
        per_epoch.append(loader.counts)
    assert all(c.used == 12 and c.skipped >= 1 for c in per_epoch)  # with workers, counted in the workers
    if num_workers == 0:  # the warnings come from this process; no prefetching: each belongs to an epoch's batches
        warnings = "\n".join(warnings_of_the_loader)
        for fault, pattern in FAULTS.items():
            assert re.search(pattern, warnings), fault
        assert sum(c.skipped for c in per_epoch) == len(warnings_of_the_loader)


def test_training_goes_on_and_logs_the_count(tmp_path):
    cfg = corrupt_setup(tmp_path, **{"data.max_bad_fraction": 0.6})
    out = tmp_path / "out"
    main_group_vit.main(["--cfg", str(cfg), "--output", str(out), "--opts", "train.epochs=1"])
    log = (out / "log.txt").read_text()
    [(epoch, skipped, read, nonfinite)] = EPOCH_LINE.findall(log)
    assert epoch == "0" and int(skipped) >= 1 and int(read) == 12 + int(skipped) and nonfinite == "0"
    assert len(re.findall("skipped a corrupt sample", log)) >= int(skipped)
    assert (out / "ckpt_epoch_0.pth").is_file()


def test_too_many_bad_samples_stop_the_run(tmp_path):
    cfg = load_config(corrupt_setup(tmp_path, **{"data.max_bad_fraction": 0.05}))
    loader = build_train_loader(cfg.data)
    message = (r"^epoch 0: \d+ of the \d+ samples read were bad \(skipped\), more than data\.max_bad_fraction=0\.05; "
               r"the warnings in the log name the broken shards$")
    with pytest.raises(UserError, match=message):
        list(loader)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_only_bad_samples_is_one_clear_error(tmp_path, num_workers):
    """Nothing usable: the run stops before a batch (the message crosses the worker process without a traceback)."""
    cfg = load_config(write_tiny_setup(tmp_path, extra={"data.num_workers": num_workers}))
    write_caption_shards(tmp_path / "pairs", 4, 3, corrupt=range(12))
    with pytest.raises(UserError) as info:
        next(iter(build_train_loader(cfg.data)))
    assert re.fullmatch(r"no usable sample in \d shard\(s\) \(.*pairs-00000\d\.tar, \.\.\.\): every sample was "
                        r"skipped \(see the warnings above\) or the shards are empty", str(info.value))


def test_all_bad_training_run_stops_with_the_reason_in_the_log(tmp_path):
    cfg = write_tiny_setup(tmp_path, extra={"evaluate.task": []})
    write_caption_shards(tmp_path / "pairs", 4, 3, corrupt=range(12))
    out = tmp_path / "out"
    with pytest.raises(UserError, match="no usable sample"):
        main_group_vit.main(["--cfg", str(cfg), "--output", str(out)])
    assert "ERROR: no usable sample" in (out / "log.txt").read_text() and not list(out.glob("*.pth"))


@pytest.mark.parametrize("value", [-0.1, 1.5, "half"])
def test_max_bad_fraction_is_checked(tmp_path, value):
    """By the config schema when the file is read, and by the same rule on a config built in code (the check the
    engine runs before training)."""
    path = write_tiny_setup(tmp_path, extra={"data.max_bad_fraction": value})
    with pytest.raises(UserError, match=r"bad value for config key 'data\.max_bad_fraction' in .*tiny_train\.yml: "
                                        r"expected a number >= 0 and <= 1"):
        load_config(path)
    cfg = load_config(write_tiny_setup(tmp_path))
    cfg.data.max_bad_fraction = value
    with pytest.raises(UserError, match=r"data\.max_bad_fraction.*expected a number >= 0 and <= 1"):
        check_config(cfg, "the run config")


def test_missing_data_folder_is_named(tmp_path):
    cfg = load_config(write_tiny_setup(tmp_path))
    cfg.data.dataset.meta.tiny_pairs.path = str(tmp_path / "nowhere")
    with pytest.raises(UserError, match=r"'tiny_pairs': its 4 shards do not exist: there is no data folder .*nowhere"):
        build_train_loader(cfg.data)
