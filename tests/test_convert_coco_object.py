"""convert_dataset/convert_coco_object.py on a generated COCO-Stuff-style tree
(as the reference's converter of the same name does it)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convert_dataset.convert_coco_object import THING_IDS, convert, lookup_table
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
GAPS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82)  # COCO category ids 12, 26, ... (minus one) do not exist


def make_coco_stuff(root: Path) -> dict[str, np.ndarray]:
    """annotations/{train2017,val2017}: label maps holding every id 0..181 and 255; images/ with one file."""
    all_ids = np.array([*range(182), 255], dtype=np.uint8)
    labels = {
        "train2017/000000000009": np.resize(all_ids, (10, 20)),
        "val2017/000000000139": np.resize(all_ids[::-1], (15, 13)),
        "val2017/000000000285": np.full((4, 5), 255, np.uint8),
    }
    for name, label in labels.items():
        path = root / "annotations" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label).save(path)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "annotations" / "val2017" / "x_labelTrainIds.png")
    (root / "images" / "val2017").mkdir(parents=True)
    (root / "images" / "val2017" / "000000000139.jpg").write_bytes(b"jpeg")
    return labels


def expected_id(stuff_id: int) -> int:
    """Spec 9: the 80 thing ids 0..89 (with gaps) -> 1..80 in order; stuff 91..181, unused ids and 255 -> 0."""
    things = [i for i in range(90) if i not in GAPS]
    return things.index(stuff_id) + 1 if stuff_id in things else 0


def test_lookup_table_maps_every_id():
    table = lookup_table()
    assert len(THING_IDS) == 80 and THING_IDS[:12] == (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12)
    for stuff_id in range(256):
        assert table[stuff_id] == expected_id(stuff_id), stuff_id
    assert table[0] == 1 and table[89] == 80 and table[90] == 0 and table[91] == 0 and table[181] == 0
    assert table[255] == 0 and sorted(set(table.tolist())) == list(range(81))


@pytest.mark.parametrize("nproc", [1, 2])
def test_convert_tree(tmp_path, nproc, capsys):
    coco = tmp_path / "coco"
    labels = make_coco_stuff(coco)
    out = tmp_path / "out"
    assert convert(coco, out, nproc=nproc) == 3  # *TrainIds* files are skipped
    assert "found 3 label maps, not the 123287" in capsys.readouterr().err  # a subset only warns
    for name, label in labels.items():
        written = np.array(Image.open(out / "annotations" / f"{name}_instanceTrainIds.png"))
        assert written.dtype == np.uint8 and written.shape == label.shape
        assert np.array_equal(written, np.vectorize(expected_id)(label).astype(np.uint8))
    assert (out / "images" / "val2017" / "000000000139.jpg").read_bytes() == b"jpeg"  # images copied
    assert not (out / "annotations" / "val2017" / "x_labelTrainIds_instanceTrainIds.png").exists()


def test_in_place_and_errors(tmp_path):
    coco = tmp_path / "coco"
    make_coco_stuff(coco)
    assert convert(coco, coco) == 3
    assert (coco / "annotations" / "val2017" / "000000000139_instanceTrainIds.png").is_file()
    with pytest.raises(UserError, match="no COCO-Stuff annotations folder"):
        convert(tmp_path / "nowhere", tmp_path / "out")
    (tmp_path / "empty" / "annotations" / "val2017").mkdir(parents=True)
    with pytest.raises(UserError, match="no label maps"):
        convert(tmp_path / "empty", tmp_path / "out")


@pytest.mark.slow
def test_cli(tmp_path):
    coco = tmp_path / "coco"
    make_coco_stuff(coco)
    env = {**os.environ, "PYTHONPATH": ""}
    script = str(REPO / "convert_dataset" / "convert_coco_object.py")
    proc = subprocess.run([sys.executable, script, str(coco), "-o", str(tmp_path / "out"), "--nproc", "2"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "converted 3 label maps" in proc.stdout
    assert len(list((tmp_path / "out" / "annotations").rglob("*_instanceTrainIds.png"))) == 3
    bad = subprocess.run([sys.executable, script, str(tmp_path / "nowhere")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: no COCO-Stuff annotations folder")
