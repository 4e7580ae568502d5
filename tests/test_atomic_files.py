"""utils.atomic_files: a file appears complete under its final name or not at all; shards read back as written."""

import pytest
import webdataset as wds

from utils.atomic_files import atomic_output, tar_bytes, write_atomic, write_tar


def test_atomic_output_leaves_nothing_on_failure_and_keeps_the_old_file(tmp_path):
    final = tmp_path / "a.json"
    write_atomic(final, "old")
    with pytest.raises(RuntimeError), atomic_output(final) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"] and final.read_text() == "old"
    with atomic_output(final) as tmp:
        tmp.write_text("whole")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"] and final.read_text() == "whole"


def test_tar_shards_read_back_and_are_reproducible(tmp_path):
    samples = [{"__key__": f"{i:03d}", "jpg": bytes([i]) * 5, "txt": f"caption {i}".encode()} for i in range(3)]
    write_tar(tmp_path / "s-000000.tar", samples, mtime=0)
    read = list(wds.WebDataset(str(tmp_path / "s-000000.tar"), shardshuffle=False))
    assert [(r["__key__"], r["jpg"], r["txt"]) for r in read] == [(s["__key__"], s["jpg"], s["txt"]) for s in samples]
    assert tar_bytes(samples, mtime=0) == (tmp_path / "s-000000.tar").read_bytes()
