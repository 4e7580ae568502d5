"""The convert_dataset tools on tiny generated inputs; the outputs are read back with webdataset and pyarrow, and
through the project's own loaders (datasets/builder.py)."""

from __future__ import annotations

import hashlib
import io
import json
import random
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import webdataset as wds
import yaml
from PIL import Image

from convert_dataset import convert_imagenet, convert_yfcc14m, create_subset, process_redcaps, rename_shards
from convert_dataset.shard_writer import ShardWriter
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
YFCC_COLUMNS = (
    "photoid uid unickname datetaken dateuploaded capturedevice title description usertags machinetags longitude "
    "latitude accuracy pageurl downloadurl licensename licenseurl serverid farmid secret secretoriginal ext marker key"
).split()


def jpeg(color: tuple[int, int, int], size: tuple[int, int] = (12, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def read_shards(paths: list[Path]) -> list[dict]:
    """Decoded samples of the shards, in order (images as PIL, text as str, cls as int)."""
    return list(wds.WebDataset([str(p) for p in paths], shardshuffle=False).decode("pil"))


def shard_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------- atomic writing


def test_shard_writer_rolls_over_and_is_atomic(tmp_path):
    pattern = tmp_path / "out" / "s-%06d.tar"
    with ShardWriter(pattern, maxcount=2) as writer:
        for i in range(5):
            writer.write({"__key__": f"k{i}", "jpg": jpeg((i, 0, 0)), "text": f"caption {i}"})
            # the shard being written is only visible under its temporary name
            assert not (tmp_path / "out" / f"s-{len(writer.shards):06d}.tar").exists()
    assert shard_names(tmp_path / "out") == ["s-000000.tar", "s-000001.tar", "s-000002.tar"]
    samples = read_shards(writer.shards)
    assert [s["__key__"] for s in samples] == [f"k{i}" for i in range(5)]
    assert samples[4]["text"] == "caption 4" and samples[4]["jpg"].size == (12, 8)


def test_shard_writer_interrupted_mid_shard_leaves_only_complete_shards(tmp_path):
    with pytest.raises(KeyboardInterrupt), ShardWriter(tmp_path / "s-%06d.tar", maxcount=2) as writer:
        for i in range(3):
            writer.write({"__key__": f"k{i}", "text": "a caption"})
        assert shard_names(tmp_path) == [".s-000001.tar.partial", "s-000000.tar"]
        raise KeyboardInterrupt
    assert shard_names(tmp_path) == ["s-000000.tar"]
    assert len(read_shards([tmp_path / "s-000000.tar"])) == 2


def test_shard_writer_stopped_while_starting_a_shard_leaves_only_complete_shards(tmp_path, monkeypatch):
    """A Ctrl-C that lands after the next shard's temporary file was opened, before its tar writer exists (the
    conversion trials' signal arrives right when a shard completes, so this is where it often lands)."""
    import convert_dataset.shard_writer as shard_writer

    def stopped_tar_writer(fileobj):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt), ShardWriter(tmp_path / "s-%06d.tar", maxcount=1) as writer:
        writer.write({"__key__": "k0", "text": "a caption"})
        monkeypatch.setattr(shard_writer.wds, "TarWriter", stopped_tar_writer)
        writer.write({"__key__": "k1", "text": "a caption"})
    assert shard_names(tmp_path) == ["s-000000.tar"]


def test_shard_writer_refuses_folder_with_shards(tmp_path):
    (tmp_path / "s-000000.tar").write_bytes(b"")
    with pytest.raises(UserError, match="already holds 1 shard"):
        ShardWriter(tmp_path / "s-%06d.tar")


# ---------------------------------------------------------------------------------------------- YFCC14M


def make_yfcc_db(path: Path, rows: list[dict]) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE yfcc100m_dataset ({', '.join(YFCC_COLUMNS)})")
    conn.execute("CREATE INDEX photoid_index ON yfcc100m_dataset (photoid)")
    for row in rows:
        values = [row.get(c, "") for c in YFCC_COLUMNS]
        conn.execute(f"INSERT INTO yfcc100m_dataset VALUES ({', '.join('?' * len(values))})", values)
    conn.commit()
    conn.close()


def photo_hash(i: int) -> str:
    return hashlib.md5(str(i).encode()).hexdigest()


@pytest.fixture()
def yfcc(tmp_path) -> dict:
    """A metadata DB of 6 photos and a subset list of 6 (photo 7 is not in the DB, photo 5 has another key)."""
    descriptions = {
        1: "A+red+%3Cb%3Ebox%3C%2Fb%3E%0Aon+the+table",  # URL-quoted, HTML tags, newline
        2: "Sunset+over+the+sea%2C+%22golden%22",
        3: "Hello",  # one word: dropped by convert_yfcc14m
        4: "Never+in+the+subset",
        5: "Wrong+hash+in+the+DB",
        6: "blue+sky",
    }
    rows = [
        {"photoid": i, "description": d, "title": "a title", "marker": 0, "key": photo_hash(i)}
        for i, d in descriptions.items()
    ]
    rows[4]["key"] = photo_hash(99)
    make_yfcc_db(tmp_path / "yfcc100m_dataset.sql", rows)
    subset = tmp_path / "yfcc100m_subset_data.tsv"
    lines = ["line\tphotoid\tphoto_hash"] + [f"{n}\t{i}\t{photo_hash(i)}" for n, i in enumerate([1, 2, 3, 5, 6, 7])]
    subset.write_text("\n".join(lines) + "\n")
    return {"dir": tmp_path, "subset": subset}


def test_clean_caption():
    assert create_subset.clean_caption("A+red+%3Cb%3Ebox%3C%2Fb%3E%0Aon++the%09table+") == "A red box on the table"
    assert create_subset.clean_caption("line<br>break") == "line break"
    assert create_subset.clean_caption(None) == ""


def test_create_subset(yfcc, capsys):
    out = yfcc["dir"] / "out"
    create_subset.main(
        ["--input-dir", str(yfcc["dir"]), "--output-dir", str(out), "--subset", str(yfcc["subset"]),
         "--subset-db", str(out / "db" / "yfcc100m_dataset.sql")]
    )  # fmt: skip
    lines = (out / "yfcc14m_dataset.tsv").read_text().splitlines()
    assert lines[0] == "file\tcaption"
    h = photo_hash
    assert f"{h(1)[:3]}/{h(1)[3:6]}/{h(1)}.jpg\tA red box on the table" in lines
    assert f'{h(2)[:3]}/{h(2)[3:6]}/{h(2)}.jpg\t"Sunset over the sea, ""golden"""' in lines  # quoted like pandas
    assert f"{h(3)[:3]}/{h(3)[3:6]}/{h(3)}.jpg\tHello" in lines
    assert f"{h(6)[:3]}/{h(6)[3:6]}/{h(6)}.jpg\tblue sky" in lines
    assert len(lines) == 5
    summary = capsys.readouterr().out
    assert "wrote 4 of 6 subset photos" in summary and "1 not in the DB" in summary and "and 1 whose" in summary
    conn = sqlite3.connect(out / "db" / "yfcc100m_dataset.sql")
    assert sorted(r[0] for r in conn.execute("SELECT photoid FROM yfcc100m_dataset")) == [1, 2, 3, 6]
    assert [r[1] for r in conn.execute("PRAGMA table_info(yfcc100m_dataset)")] == YFCC_COLUMNS
    assert conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall() == [("photoid_index",)]


def test_create_subset_input_errors(yfcc, tmp_path):
    args = ["--output-dir", str(tmp_path / "out"), "--subset", str(yfcc["subset"])]
    with pytest.raises(UserError, match="not found"):
        create_subset.main(["--input-dir", str(tmp_path / "nowhere"), *args])
    not_yfcc = tmp_path / "other.sql"
    sqlite3.connect(not_yfcc).execute("CREATE TABLE t (a)").connection.close()
    with pytest.raises(UserError, match="has no table 'yfcc100m_dataset'"):
        create_subset.main(["--db", str(not_yfcc), *args])
    bad_subset = tmp_path / "bad.tsv"
    bad_subset.write_text("line\tphotoid\tphoto_hash\n0\t1\tnot-a-hash\n")
    with pytest.raises(UserError, match="line 2: photo_hash 'not-a-hash'"):
        create_subset.main(["--db", str(yfcc["dir"] / "yfcc100m_dataset.sql"), "--subset", str(bad_subset)])
    db = yfcc["dir"] / "yfcc100m_dataset.sql"
    with pytest.raises(UserError, match="would overwrite"):
        create_subset.main(["--db", str(db), "--subset-db", str(db), *args])
    assert not (tmp_path / "out" / "yfcc14m_dataset.tsv").exists()


def test_create_subset_without_a_match_writes_nothing(yfcc):
    """A subset none of whose photos is in the DB (photo 7) gives one line, not an empty TSV and exit 0."""
    subset = yfcc["dir"] / "only7.tsv"
    subset.write_text(f"line\tphotoid\tphoto_hash\n0\t7\t{photo_hash(7)}\n")
    with pytest.raises(UserError, match=r"none of the 1 subset photos is in the metadata DB .*: nothing written"):
        create_subset.main(["--input-dir", str(yfcc["dir"]), "--subset", str(subset), "--output-dir",
                            str(yfcc["dir"] / "out")])
    assert not (yfcc["dir"] / "out" / "yfcc14m_dataset.tsv").exists()


def write_zip(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def convert_tiny_yfcc(yfcc: dict) -> Path:
    """create_subset's TSV + yfcc100m-style zips -> shards (1 sample each); returns the shard folder."""
    d = yfcc["dir"]
    create_subset.main(["--input-dir", str(d), "--output-dir", str(d), "--subset", str(yfcc["subset"])])
    zips = d / "zips"
    zips.mkdir()

    def member(i: int) -> str:
        return f"data/images/{create_subset.image_path(photo_hash(i))}"

    write_zip(
        zips / "000.zip", {member(1): jpeg((255, 0, 0)), member(2): jpeg((0, 255, 0)), member(3): jpeg((9, 9, 9))}
    )
    write_zip(
        zips / "001.zip",
        {member(1): jpeg((255, 0, 0)), member(4): jpeg((1, 1, 1)), member(6): b"", "data/images/x/y/z.jpg": b"?"},
    )
    (zips / "002.zip").write_bytes(b"not a zip")
    shards = d / "shards"
    convert_yfcc14m.main(
        ["--root", str(zips), "--info", str(d / "yfcc14m_dataset.tsv"), "--shards", str(shards), "--maxcount", "1"]
    )
    return shards


def test_convert_yfcc14m_end_to_end(yfcc, capsys):
    shards = convert_tiny_yfcc(yfcc)
    assert shard_names(shards) == ["yfcc14m-000000.tar", "yfcc14m-000001.tar"]
    samples = read_shards(sorted(shards.iterdir()))
    assert [(s["__key__"], s["text"]) for s in samples] == [
        (photo_hash(1), "A red box on the table"),
        (photo_hash(2), 'Sunset over the sea, "golden"'),
    ]
    assert samples[0]["jpg"].mode == "RGB" and samples[0]["jpg"].getpixel((4, 4))[0] > 200
    summary = capsys.readouterr().out
    assert "wrote 2 samples in 2 shard(s)" in summary
    assert "1 duplicates, 1 short captions, 2 not in the TSV, 1 unreadable images, 1 unreadable archives" in summary


def test_convert_yfcc14m_input_errors(tmp_path):
    (tmp_path / "zips").mkdir()
    args = ["--info", str(tmp_path / "info.tsv"), "--shards", str(tmp_path / "out")]
    with pytest.raises(UserError, match="no \\*.zip archives"):
        convert_yfcc14m.main(["--root", str(tmp_path / "zips"), *args])
    write_zip(tmp_path / "zips" / "a.zip", {"data/images/a/b/c.jpg": jpeg((0, 0, 0))})
    with pytest.raises(UserError, match="caption TSV .* not found"):
        convert_yfcc14m.main(["--root", str(tmp_path / "zips"), *args])
    (tmp_path / "info.tsv").write_text("path\ttext\n")
    with pytest.raises(UserError, match="columns 'file' and 'caption'"):
        convert_yfcc14m.main(["--root", str(tmp_path / "zips"), *args])
    (tmp_path / "info.tsv").write_text("file\tcaption\nother/path.jpg\ttwo words\n")
    with pytest.raises(UserError, match="no image of .* matched a caption"):
        convert_yfcc14m.main(["--root", str(tmp_path / "zips"), *args])
    assert shard_names(tmp_path / "out") == []


# ---------------------------------------------------------------------------------------------- RedCaps


def test_process_redcaps(tmp_path, capsys):
    ann = tmp_path / "annotations"
    ann.mkdir()
    items = {
        "aww_2020.json": [{"url": f"https://i.redd.it/a{i}.jpg", "caption": f"cat {i}", "score": 3} for i in range(5)],
        "earthporn_2019.json": [{"url": f"https://i.redd.it/b{i}.jpg", "caption": f"view {i}"} for i in range(4)],
    }
    for name, records in items.items():
        (ann / name).write_text(json.dumps({"info": {}, "annotations": records}))
    expected = [(a["url"], a["caption"]) for name in sorted(items) for a in items[name]]
    random.seed(42)
    random.shuffle(expected)  # the reference's order

    process_redcaps.main([str(ann), str(tmp_path / "meta" / "redcaps.parquet")])
    table = pq.read_table(tmp_path / "meta" / "redcaps.parquet")
    assert table.column_names == ["URL", "TEXT"]
    assert list(zip(*table.to_pydict().values(), strict=True)) == expected

    process_redcaps.main([str(ann), str(tmp_path / "split" / "redcaps.parquet"), "--num-split", "2"])
    assert shard_names(tmp_path / "split") == ["redcaps_part0.parquet", "redcaps_part1.parquet"]
    for i in range(2):
        part = pq.read_table(tmp_path / "split" / f"redcaps_part{i}.parquet").to_pydict()
        assert list(zip(part["URL"], part["TEXT"], strict=True)) == expected[i::2]
    assert "wrote 9 records from 2 annotation file(s)" in capsys.readouterr().out


def test_process_redcaps_input_errors(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    out = str(tmp_path / "r.parquet")
    with pytest.raises(UserError, match="no \\*.json files"):
        process_redcaps.main([str(ann), out])
    (ann / "a.json").write_text('{"annotations": [{"url": "u"}]}')
    with pytest.raises(UserError, match=r"annotations\[0\] has no string 'url' and 'caption'"):
        process_redcaps.main([str(ann), out])
    (ann / "a.json").write_text("{not json")
    with pytest.raises(UserError, match="is not valid JSON"):
        process_redcaps.main([str(ann), out])
    with pytest.raises(UserError, match="must end with .parquet"):
        process_redcaps.main([str(ann), str(tmp_path / "r.csv")])
    assert not (tmp_path / "r.parquet").exists()


# ---------------------------------------------------------------------------------------------- ImageNet

WNIDS = ["n01440764", "n01443537", "n01484850"]  # sorted: tench, goldfish, great white shark


def make_val_folder(root: Path) -> dict[str, int]:
    """3 class folders x 3 images (file names interleave the classes, as in ImageNet val); name -> class index."""
    labels = {}
    for n in range(9):
        index = (n * 2) % 3
        name = f"ILSVRC2012_val_{n + 1:08d}.JPEG"
        (root / WNIDS[index]).mkdir(parents=True, exist_ok=True)
        (root / WNIDS[index] / name).write_bytes(jpeg((40 * index, 0, 0), size=(20 + n, 16)))
        labels[name] = index
    return labels


def test_convert_imagenet_class_folders(tmp_path, capsys):
    labels = make_val_folder(tmp_path / "val")
    out = tmp_path / "shards"
    convert_imagenet.main([str(tmp_path / "val"), "--shards-out", str(out), "--num-shards", "2", "--num-classes", "3"])
    assert shard_names(out) == ["imagenet-val-000000.tar", "imagenet-val-000001.tar"]
    samples = read_shards(sorted(out.iterdir()))
    assert [s["__key__"] for s in samples] == [Path(name).stem for name in sorted(labels)]
    assert [s["cls"] for s in samples] == [labels[name] for name in sorted(labels)]
    assert all(isinstance(s["cls"], int) for s in samples)
    assert samples[3]["jpg"].size == (23, 16)
    assert [len(read_shards([p])) for p in sorted(out.iterdir())] == [5, 4]  # sample i goes to shard i * 2 // 9
    assert "wrote 9 images, 3 classes, 2 shards" in capsys.readouterr().out


@pytest.mark.parametrize("form", ["index", "wnid"])
def test_convert_imagenet_flat_with_labels(tmp_path, form):
    labels = make_val_folder(tmp_path / "val")
    flat = tmp_path / "flat"
    flat.mkdir()
    for wnid in WNIDS:
        for image in (tmp_path / "val" / wnid).iterdir():
            image.rename(flat / image.name)
    lines = [f"{name} {index if form == 'index' else WNIDS[index]}" for name, index in labels.items()]
    (tmp_path / "val.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "shards"
    convert_imagenet.main(
        [str(flat), "--labels", str(tmp_path / "val.txt"), "--shards-out", str(out), "--num-shards", "3",
         "--num-classes", "3"]
    )  # fmt: skip
    samples = read_shards(sorted(out.iterdir()))
    assert len(list(out.iterdir())) == 3
    assert [(s["__key__"] + ".JPEG", s["cls"]) for s in samples] == sorted(labels.items())


def test_convert_imagenet_input_errors(tmp_path):
    make_val_folder(tmp_path / "val")
    out = ["--shards-out", str(tmp_path / "shards")]
    with pytest.raises(UserError, match="has 3 class folders, expected 1000"):
        convert_imagenet.main([str(tmp_path / "val"), *out])
    (tmp_path / "gt.txt").write_text("490\n361\n")
    with pytest.raises(UserError, match="ILSVRC2012_validation_ground_truth"):
        convert_imagenet.main([str(tmp_path / "val"), "--labels", str(tmp_path / "gt.txt"), *out])
    (tmp_path / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG 5\n")
    with pytest.raises(UserError, match="all class indices 0..2"):
        convert_imagenet.main([str(tmp_path / "val"), "--labels", str(tmp_path / "val.txt"), "--num-classes", "3"])
    (tmp_path / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG 1\n")
    with pytest.raises(UserError, match="1 image\\(s\\) of .* are not in"):
        convert_imagenet.main([str(tmp_path / "val"), "--labels", str(tmp_path / "val.txt"), "--num-classes", "3"])
    with pytest.raises(UserError, match="no class folders; for the flat layout pass --labels"):
        convert_imagenet.main([str(tmp_path / "val" / WNIDS[0]), *out])
    assert not (tmp_path / "shards").exists()


def test_convert_imagenet_interrupted_leaves_no_partial_shard(tmp_path, monkeypatch):
    make_val_folder(tmp_path / "val")
    read_bytes = Path.read_bytes

    def failing_read(self: Path) -> bytes:
        if self.name == "ILSVRC2012_val_00000006.JPEG":
            raise OSError("disk went away")
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", failing_read)
    out = tmp_path / "shards"
    with pytest.raises(OSError, match="disk went away"):
        convert_imagenet.main([str(tmp_path / "val"), "--shards-out", str(out), "--num-shards=3", "--num-classes=3"])
    assert shard_names(out) == ["imagenet-val-000000.tar"]  # images 1-3; the shard of 4-6 was discarded
    assert len(read_shards([out / "imagenet-val-000000.tar"])) == 3


# ---------------------------------------------------------------------------------------------- renaming


def test_rename_shards(tmp_path, capsys):
    for name in ["00000.tar", "00000.parquet", "00001.tar", "stats.json"]:
        (tmp_path / name).write_text(name)
    for name, successes in [("00000_stats.json", 7), ("00001_stats.json", 5)]:
        (tmp_path / name).write_text(json.dumps({"count": 10, "successes": successes}))
    rename_shards.main([str(tmp_path), "--prefix", "gcc-train-", "--dry-run"])
    out = capsys.readouterr().out
    assert "00001.tar -> gcc-train-000001.tar" in out and "would rename 5 files" in out
    assert "config: prefix: gcc-train-{000000..000001}.tar, length: 12" in out
    assert "00000.tar" in shard_names(tmp_path)
    rename_shards.main([str(tmp_path), "--prefix", "gcc-train-"])
    assert shard_names(tmp_path) == [
        "gcc-train-000000.parquet", "gcc-train-000000.tar", "gcc-train-000000_stats.json",
        "gcc-train-000001.tar", "gcc-train-000001_stats.json", "stats.json",
    ]  # fmt: skip
    assert (tmp_path / "gcc-train-000001.tar").read_text() == "00001.tar"
    assert "renamed 5 files" in capsys.readouterr().out
    with pytest.raises(UserError, match="already renamed"):
        rename_shards.main([str(tmp_path), "--prefix", "gcc-train-"])


def test_rename_shards_names_missing_shards(tmp_path, capsys):
    for name in ["000000.tar", "000003.tar"]:
        (tmp_path / name).write_text(name)
    rename_shards.main([str(tmp_path), "--prefix", "redcap12m-"])
    out = capsys.readouterr().out
    assert "config: prefix: redcap12m-{000000..000003}.tar\nwarning: 2 shard(s) of that range are missing" in out


def test_rename_shards_refuses_to_overwrite(tmp_path):
    for name in ["000000.tar", "000001.tar", "gcc-train-000001.tar"]:
        (tmp_path / name).write_text(name)
    with pytest.raises(UserError, match="gcc-train-000001.tar exists already"):
        rename_shards.main([str(tmp_path), "--prefix", "gcc-train-"])
    assert shard_names(tmp_path) == ["000000.tar", "000001.tar", "gcc-train-000001.tar"]


# ---------------------------------------------------------------------------------------------- command lines


@pytest.mark.parametrize(
    "args",
    [
        ["convert_dataset/create_subset.py", "--subset", "missing.tsv"],
        ["convert_dataset/convert_yfcc14m.py", "--root", "missing", "--info", "x.tsv", "--shards", "out"],
        ["convert_dataset/process_redcaps.py", "missing", "out.parquet"],
        ["convert_dataset/convert_imagenet.py", "missing"],
        ["convert_dataset/rename_shards.py", "missing", "--prefix", "gcc-train-"],
    ],
)
def test_scripts_report_input_errors_in_one_line(args, tmp_path):
    command = [sys.executable, str(REPO / args[0]), *args[1:]]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "missing" in result.stderr


# ---------------------------------------------------------------------------------------------- project loaders


def tiny_config(tmp_path: Path, meta: dict, train: list[str], val: list[str]) -> Path:
    """A config over default.yml whose datasets are ``meta`` (batch 2, no workers)."""
    cfg = {
        "_base_": str(REPO / "configs" / "default.yml"),
        "data": {
            "batch_size": 2, "num_workers": 0, "pin_memory": False, "shuffle_buffer": 2,
            "dataset": {"meta": meta, "train": train, "val": val},
        },
    }  # fmt: skip
    path = tmp_path / "tiny.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_yfcc_and_renamed_img2dataset_shards_feed_the_train_loader(yfcc, tmp_path):
    from datasets.builder import build_train_loader
    from utils.config import load_config

    yfcc_shards = convert_tiny_yfcc(yfcc)  # 2 samples
    gcc = tmp_path / "gcc3m_shards"
    with ShardWriter(gcc / "%05d.tar", maxcount=2) as writer:  # img2dataset's layout: 00000.tar, ... with jpg + txt
        for i in range(4):
            writer.write({"__key__": f"{i:09d}", "jpg": jpeg((60 * i, 90, 0), (30, 20)), "txt": f"photo number {i}"})
    rename_shards.main([str(gcc), "--prefix", "gcc-train-"])
    meta = {
        "tiny_yfcc": {"type": "img_txt_pair", "path": str(yfcc_shards), "prefix": "yfcc14m-{000000..000001}.tar",
                      "length": 2},
        "tiny_gcc": {"type": "img_txt_pair", "path": str(gcc), "prefix": "gcc-train-{000000..000001}.tar", "length": 4},
    }  # fmt: skip
    cfg = load_config(tiny_config(tmp_path, meta, ["tiny_yfcc", "tiny_gcc"], []))
    loader = build_train_loader(cfg.data)
    batches = list(loader)
    assert len(loader) == len(batches) == 3  # (2 + 4) // batch size 2
    assert batches[0]["image"].shape == (2, 3, 224, 224) and batches[0]["text"].shape == (2, 77)
    captions = {tuple(t.tolist()) for b in batches for t in b["text"]}
    assert len(captions) >= 4  # distinct captions from both datasets (the stream repeats, so some may recur)


def test_imagenet_shards_feed_the_val_loader(tmp_path):
    from datasets.builder import build_val_loader
    from utils.config import load_config

    labels = make_val_folder(tmp_path / "val")
    out = tmp_path / "imagenet_shards"
    convert_imagenet.main([str(tmp_path / "val"), "--shards-out", str(out), "--num-shards=3", "--num-classes=3"])
    meta = {"tiny_imagenet": {"type": "img_cls_pair", "path": str(out), "prefix": "imagenet-val-{000000..000002}.tar",
                              "length": 9}}  # fmt: skip
    batches = list(build_val_loader(load_config(tiny_config(tmp_path, meta, [], ["tiny_imagenet"])).data))
    assert torch.cat([b["target"] for b in batches]).tolist() == [labels[name] for name in sorted(labels)]
    assert batches[0]["image"].shape == (2, 3, 224, 224)
