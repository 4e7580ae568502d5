"""Nothing a user already has is lost: every command that writes a checkpoint, a model folder, a world, results or
a data file refuses one that is there already, in one line and before any work, unless given --overwrite; then it
replaces it only once the new one is complete, and a failed run leaves it as it was (``utils.overwrite``)."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from helpers_train_data import write_tiny_setup
from omegaconf import OmegaConf

import main_group_vit
import main_seg
from convert_dataset import create_subset, process_redcaps
from models.hf_convert import save_hf_folder
from utils.errors import UserError
from utils.overwrite import replacing

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "tests" / "golden" / "tiny_official_ckpt.pth"
OLD = b"the user's file"


def load_tool(name: str):
    """A tools/ script as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_replacing_restores_what_it_moved_aside_when_the_block_fails(tmp_path):
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "a.tar").write_bytes(OLD)
    (tmp_path / "info.json").write_bytes(OLD)
    before = snapshot(tmp_path)
    with pytest.raises(KeyboardInterrupt), replacing([tmp_path / "world", tmp_path / "info.json", tmp_path / "new"]):
        (tmp_path / "world").mkdir()
        (tmp_path / "world" / "b.tar").write_bytes(b"half")
        (tmp_path / "new").write_bytes(b"half")
        raise KeyboardInterrupt
    assert snapshot(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["info.json", "world"]
    with replacing([tmp_path / "world", tmp_path / "info.json"]):
        (tmp_path / "world").mkdir()
        (tmp_path / "world" / "b.tar").write_bytes(b"new")
    assert snapshot(tmp_path) == {"world/b.tar": b"new"}


def test_another_world_is_refused_and_replaced_whole_with_overwrite(tmp_path, capsys):
    """A world of 4 shards, then one of 2 with another seed: refused; with --overwrite the old world's shards do
    not outlive it (no mix of two worlds)."""
    make = load_tool("make_synthetic_data")
    common = ["--out", str(tmp_path), "--seg-images", "2", "--cls-images", "0", "--image-size", "32",
              "--samples-per-shard", "1", "--workers", "1"]
    make.main([*common, "--train-samples", "4"])
    before = snapshot(tmp_path)
    with pytest.raises(UserError, match=r"exists already: refusing to overwrite a synthetic world .*--overwrite"):
        make.main([*common, "--train-samples", "2", "--seed", "1"])
    assert snapshot(tmp_path) == before
    make.main([*common, "--train-samples", "2", "--seed", "1", "--overwrite"])
    assert len(list((tmp_path / "train").glob("*.tar"))) == 2
    assert json.loads((tmp_path / "info.json").read_text())["seed"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_checkpoint_and_model_folder_outputs_are_refused(tmp_path, tiny_ckpt, monkeypatch):
    """--from-hf onto a training checkpoint and --to-hf onto a model folder: refused, the files as they were; with
    --overwrite both are replaced, and every file of the new folder is readable by others (as config.json is)."""
    convert = load_tool("convert_hf_checkpoint")
    full = OmegaConf.to_container(tiny_ckpt["config"], resolve=True)
    folder = tmp_path / "hf"
    save_hf_folder(tiny_ckpt["model"], full["model"], folder, img_aug=full["data"]["img_aug"])
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert set(modes.values()) == {modes["config.json"]}, modes
    trained = tmp_path / "checkpoint.pth"
    trained.write_bytes(OLD)
    folder_before = snapshot(folder)
    for argv in (["--from-hf", str(folder), str(trained)], ["--to-hf", str(CKPT), str(folder)]):
        monkeypatch.setattr(sys, "argv", ["convert_hf_checkpoint.py", *argv])
        with pytest.raises(UserError, match="refusing to overwrite"):
            convert.main()
    assert trained.read_bytes() == OLD and snapshot(folder) == folder_before
    (folder / "notes.txt").write_text("replaced with the folder")
    for argv in (["--from-hf", str(folder), str(trained)], ["--to-hf", str(CKPT), str(folder)]):
        monkeypatch.setattr(sys, "argv", ["convert_hf_checkpoint.py", *argv, "--overwrite"])
        convert.main()
    assert trained.read_bytes() != OLD and not (folder / "notes.txt").exists()
    assert (folder / "model.safetensors").is_file() and not [p for p in tmp_path.iterdir() if p.name[0] == "."]


def test_an_evaluation_keeps_earlier_results_and_a_failed_one_its_config(tmp_path, monkeypatch):
    """main_seg.py into a folder with results: refused before loading anything; a run that fails (a suite dataset
    missing) leaves the earlier config.json as it was."""
    monkeypatch.chdir(tmp_path)  # no suite dataset under ./local_data
    out = tmp_path / "out"
    out.mkdir()
    (out / "seg_results.json").write_bytes(OLD)
    (out / "config.json").write_bytes(OLD)
    common = ["--cfg", str(ROOT / "configs/default.yml"), "--resume", str(CKPT), "--output", str(out)]
    with pytest.raises(UserError, match=r"1 suite dataset\(s\) missing: voc21"):
        main_seg.main([*common, "--suite", "voc21"])
    assert (out / "config.json").read_bytes() == OLD
    with pytest.raises(UserError, match=r"seg_results.json exists already: refusing to overwrite"):
        main_seg.main(common)
    assert (out / "seg_results.json").read_bytes() == OLD and (out / "config.json").read_bytes() == OLD


def test_data_files_are_refused(tmp_path):
    """process_redcaps.py onto an existing parquet part and create_subset.py onto an existing TSV: refused; an
    annotation folder without records writes no empty parquet."""
    ann = tmp_path / "annotations"
    ann.mkdir()
    (ann / "pics_2020.json").write_text(json.dumps({"annotations": [{"url": "u", "caption": "c"}] * 2}))
    (tmp_path / "r_part1.parquet").write_bytes(OLD)
    with pytest.raises(UserError, match=r"r_part1.parquet exists already"):
        process_redcaps.main([str(ann), str(tmp_path / "r.parquet"), "--num-split", "2"])
    assert not (tmp_path / "r_part0.parquet").exists() and (tmp_path / "r_part1.parquet").read_bytes() == OLD
    process_redcaps.main([str(ann), str(tmp_path / "r.parquet"), "--num-split", "2", "--overwrite"])
    assert pq.read_table(tmp_path / "r_part1.parquet").num_rows == 1
    (ann / "pics_2020.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(UserError, match=r"0 annotation\(s\) in 1 file\(s\) of .*: not enough for 1 parquet"):
        process_redcaps.main([str(ann), str(tmp_path / "empty.parquet")])
    assert not (tmp_path / "empty.parquet").exists()

    (tmp_path / "yfcc14m_dataset.tsv").write_bytes(OLD)
    (tmp_path / "subset.tsv").write_text("")
    with pytest.raises(UserError, match=r"yfcc14m_dataset.tsv exists already"):
        create_subset.main(["--db", os.devnull, "--subset", str(tmp_path / "subset.tsv"), "--output-dir",
                            str(tmp_path)])
    assert (tmp_path / "yfcc14m_dataset.tsv").read_bytes() == OLD


def test_an_evaluation_into_a_training_folder_keeps_its_config(tmp_path):
    """main_group_vit.py --eval into a folder with a config.yml (a training run's) leaves it as it was."""
    cfg = write_tiny_setup(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.yml").write_bytes(b"model_name: the training run\n")
    main_group_vit.main(["--cfg", str(cfg), "--eval", "--resume", str(CKPT), "--output", str(out)])
    assert (out / "config.yml").read_bytes() == b"model_name: the training run\n"


def test_a_training_run_without_auto_resume_keeps_another_runs_checkpoints(tmp_path):
    cfg = write_tiny_setup(tmp_path, extra={"evaluate.task": [], "checkpoint.auto_resume": False})
    out = tmp_path / "out"
    out.mkdir()
    (out / "ckpt_epoch_0.pth").write_bytes(OLD)
    with pytest.raises(UserError, match=r"holds the checkpoints of another run \(e.g. ckpt_epoch_0.pth\)"):
        main_group_vit.main(["--cfg", str(cfg), "--output", str(out)])
    assert (out / "ckpt_epoch_0.pth").read_bytes() == OLD
