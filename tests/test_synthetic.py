"""The synthetic world (datasets/synthetic/): the spec, rendering, truthful captions, determinism, the three output
layouts and the patch-grid bound."""

import json
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

import datasets.synthetic.writer as writer
from datasets.synthetic import (
    CLASSES,
    WORLDS,
    SceneObject,
    WorldSpec,
    nameable,
    relation,
    sample_rng,
    write_cls_set,
    write_seg_set,
    write_train_shards,
    write_world,
)
from datasets.synthetic import caption_for as _caption_for
from datasets.synthetic import classes_in_caption as _classes_in_caption
from datasets.synthetic import render_scene as _render_scene
from segmentation.evaluation.diagnostics import patch_grid_bound, patch_majority_map

ROOT = Path(__file__).resolve().parents[1]
SPEC = WorldSpec()
SIZE = SPEC.image_size
CLASS_NAMES = SPEC.class_names


def render_scene(rng, spec=SPEC, **kwargs):
    return _render_scene(rng, spec, **kwargs)


def caption_for(objects, rng, spec=SPEC):
    return _caption_for(objects, spec, rng)


def classes_in_caption(caption, spec=SPEC):
    return _classes_in_caption(caption, spec)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_class_list():
    assert len(CLASSES) >= 8 and CLASS_NAMES[0] == "background"
    words = [w for c in CLASSES for w in (c.name, *c.synonyms)]
    assert all(w.isalpha() and w.islower() for w in words)
    assert len(set(words)) == len(words)  # a synonym never names two classes
    assert len({c.colour for c in CLASSES}) == len(CLASSES)
    assert classes_in_caption("Two Boxes, a ball and a DONUT.") == {1, 2, 5}
    assert WORLDS["v1"] == SPEC  # the first world is the default spec


def test_render_scene_masks_match_objects():
    for i in range(60):
        image, mask, objects = render_scene(sample_rng(0, "train", i))
        assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
        assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
        assert 2 <= len(objects) <= 4
        labels = {o.label for o in objects}
        assert set(np.unique(mask).tolist()) - {0} <= labels  # mask classes are objects of the scene
        for label in labels:  # the mask holds exactly the visible pixels of each class
            assert (mask == label).sum() == sum(o.visible for o in objects if o.label == label)
        assert objects[-1].visible == objects[-1].area > 0  # the last object is drawn on top
        again = render_scene(sample_rng(0, "train", i))
        assert np.array_equal(again[0], image) and np.array_equal(again[1], mask)


def test_captions_name_only_objects_in_the_image():
    omitted = synonyms = relations = 0
    texts = set()
    for i in range(400):
        rng = sample_rng(3, "train", i)
        _, mask, objects = render_scene(rng)
        caption = caption_for(objects, rng)
        named = classes_in_caption(caption)
        visible = {o.label for o in nameable(objects)}
        assert named and named <= visible <= set(np.unique(mask).tolist()), caption
        omitted += named < visible
        synonyms += any(s in caption for c in CLASSES for s in c.synonyms)
        relations += any(r in caption for r in (" left of ", " right of ", " above ", " below ", " next to "))
        texts.add(caption)
    assert omitted > 40 and synonyms > 40 and relations > 40
    assert len(texts) > 390


def test_relation_follows_positions():
    def at(x: float, y: float) -> SceneObject:
        return SceneObject(1, (x, y), 0.3, "plain", 100, 100, "red")

    assert relation(at(10, 50), at(80, 50)) == "left"
    assert relation(at(80, 50), at(10, 45)) == "right"
    assert relation(at(50, 10), at(52, 80)) == "above"
    assert relation(at(50, 80), at(52, 10)) == "below"
    assert relation(at(10, 10), at(60, 60)) == "near"


def test_train_shards_are_deterministic_and_readable(tmp_path):
    kwargs = dict(num_samples=10, spec=SPEC, samples_per_shard=4)
    info = write_train_shards(tmp_path / "a", seed=5, **kwargs)
    write_train_shards(tmp_path / "b", seed=5, workers=2, **kwargs)
    write_train_shards(tmp_path / "c", seed=6, **kwargs)
    a, b, c = (_files(tmp_path / x) for x in "abc")
    assert list(a) == [f"synthetic-train-00000{i}.tar" for i in range(3)]
    assert a == b  # same seed, same bytes, whatever the number of workers
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)
    assert info == {"path": str(tmp_path / "a"), "prefix": "synthetic-train-{000000..000002}.tar", "length": 10,
                    "shards": 3}
    assert list(_tar_members(tmp_path / "a" / "synthetic-train-000002.tar")) == [
        "000000008.jpg", "000000008.txt", "000000009.jpg", "000000009.txt"]

    samples = list(wds.WebDataset(f"{tmp_path}/a/{info['prefix']}", shardshuffle=False).decode("pil"))
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(10)]
    for i, s in enumerate(samples):
        rng = sample_rng(5, "train", i)
        image, _, objects = render_scene(rng)
        assert s["txt"] == caption_for(objects, rng)
        assert np.abs(np.asarray(s["jpg"], np.float32) - image).mean() < 6  # the JPEG of the rendered image


def test_seg_set_in_pascal_voc_layout(tmp_path):
    info = write_seg_set(tmp_path / "seg", 5, SPEC, seed=5)
    root = Path(info["root"])
    ids = (root / "ImageSets/Segmentation/val.txt").read_text().split()
    assert ids == [f"{i:06d}" for i in range(5)]
    assert (root / "classes.txt").read_text().split("\n")[:-1] == list(CLASS_NAMES)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["classes"] == list(CLASS_NAMES) and len(meta["palette"]) == len(CLASS_NAMES)
    for i, name in enumerate(ids):
        image, mask, objects = render_scene(sample_rng(5, "seg", i))
        png = Image.open(root / "SegmentationClass" / f"{name}.png")
        assert png.mode == "P"
        assert np.array_equal(np.asarray(png), mask)  # exactly the rendered mask
        jpg = np.asarray(Image.open(root / "JPEGImages" / f"{name}.jpg"), np.float32)
        assert np.abs(jpg - image).mean() < 6
        assert {o.label for o in objects if o.visible} == set(np.unique(mask).tolist()) - {0}
    train_image = render_scene(sample_rng(5, "train", 0))[0]
    assert not np.array_equal(train_image, render_scene(sample_rng(5, "seg", 0))[0])  # held out


def test_cls_set_labels_the_one_object(tmp_path):
    info = write_cls_set(tmp_path / "cls", 6, SPEC, seed=5, samples_per_shard=4)
    assert info["prefix"] == "synthetic-cls-{000000..000001}.tar" and info["length"] == 6
    assert Path(info["classnames"]).read_text().split() == list(CLASS_NAMES[1:])
    samples = list(wds.WebDataset(f"{tmp_path}/cls/{info['prefix']}", shardshuffle=False).decode("pil"))
    assert len(samples) == 6
    for i, s in enumerate(samples):
        _, _, objects = render_scene(sample_rng(5, "cls", i), num_objects=(1, 1), scale=SPEC.cls_scale)
        assert s["cls"] == objects[0].label - 1 and s["jpg"].size == (SIZE, SIZE)


def test_interrupted_run_leaves_only_complete_shards(tmp_path, monkeypatch):
    render = writer.render_scene

    def failing(rng, spec, **kwargs):
        failing.calls += 1
        if failing.calls == 6:
            raise KeyboardInterrupt
        return render(rng, spec, **kwargs)

    failing.calls = 0
    monkeypatch.setattr(writer, "render_scene", failing)
    with pytest.raises(KeyboardInterrupt):
        write_train_shards(tmp_path, 10, SPEC, samples_per_shard=4)
    assert [p.name for p in tmp_path.iterdir()] == ["synthetic-train-000000.tar"]
    assert len(_tar_members(tmp_path / "synthetic-train-000000.tar")) == 8


def test_cli(tmp_path):
    cmd = [sys.executable, str(ROOT / "tools/make_synthetic_data.py"), "--out", str(tmp_path), "--train-samples",
           "6", "--seg-images", "3", "--cls-images", "2", "--image-size", "48", "--workers", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "prefix: synthetic-train-{000000..000000}.tar" in done.stdout
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["train"]["length"] == 6 and info["seg"]["num_images"] == 3 and info["cls"]["length"] == 2
    assert len(list((tmp_path / "seg/JPEGImages").iterdir())) == 3
    assert not list(tmp_path.rglob(".*.partial"))

    bad = subprocess.run([*cmd[:2], "--image-size", "8"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --image-size")


# ------------------------------------------------------------------------------------------------ world variants


UNTIED = WorldSpec(image_size=48, num_objects=(1, 3), colour_tied_to_class=False, background="plain")


def test_world_is_a_pure_function_of_spec_and_seed(tmp_path):
    write_world(tmp_path / "a", UNTIED, seed=2, train=5, seg=3, cls=2, samples_per_shard=2)
    write_world(tmp_path / "b", UNTIED, seed=2, train=5, seg=3, cls=2, samples_per_shard=2, workers=2)
    write_world(tmp_path / "c", WorldSpec(image_size=48), seed=2, train=5, seg=3, cls=2, samples_per_shard=2)
    a, b, c = (_files(tmp_path / x) for x in "abc")
    strip = lambda files: {k: v for k, v in files.items() if k not in ("info.json", "cls/classnames.txt")}  # noqa: E731
    assert strip(a) == strip(b)  # same spec and seed, same bytes
    assert a["seg/JPEGImages/000000.jpg"] != c["seg/JPEGImages/000000.jpg"]  # the spec decides the images
    info = json.loads((tmp_path / "a" / "info.json").read_text())
    assert info["spec"]["colour_tied_to_class"] is False and info["spec"]["num_objects"] == [1, 3]
    assert info["seg"]["num_images"] == 3 and info["train"]["shards"] == 3


def test_untied_colours_are_distinct_and_named_truthfully():
    colours_of = {}
    for i in range(300):
        rng = sample_rng(1, "train", i)
        image, mask, objects = render_scene(rng, UNTIED)
        assert 1 <= len(objects) <= 3 and image.shape == (48, 48, 3)
        assert len({o.colour for o in objects}) == len(objects)  # distinct within an image
        for o in objects:
            colours_of.setdefault(o.label, set()).add(o.colour)
        caption = caption_for(objects, rng, UNTIED)
        assert classes_in_caption(caption, UNTIED) <= {o.label for o in nameable(objects)}
        words = set(caption.lower().replace(".", "").replace(",", "").split())
        named_colours = words & {c.colour for c in CLASSES}
        assert named_colours <= {o.colour for o in nameable(objects)}, caption  # no colour the scene lacks
    assert all(len(c) >= 5 for c in colours_of.values())  # the colour says nothing about the class


def test_patch_grid_bound_on_a_hand_made_mask():
    mask = np.zeros((16, 16), np.uint8)
    mask[:, :8] = 1  # the left half: class 1, exactly two patches of 8 x 8
    mask[10:13, 10:13] = 2  # 9 pixels of class 2 inside a background patch: lost to the grid
    import torch

    pred = patch_majority_map(torch.from_numpy(mask)[None], patch=8, num_classes=3)[0].numpy()
    expected = np.zeros((16, 16), np.int64)
    expected[:, :8] = 1
    assert np.array_equal(pred, expected)
    # IoU: class 1 = 1, background = 119 / 128, class 2 = 0
    assert patch_grid_bound(torch.from_numpy(mask)[None], 8, 3) == pytest.approx(100 * (1 + 119 / 128) / 3)
    assert patch_grid_bound(torch.from_numpy(mask)[None], 1, 3) == pytest.approx(100)  # a 1-pixel grid loses nothing


@pytest.mark.parametrize("world", sorted(WORLDS))
def test_every_world_draws_and_names_each_of_its_classes(world):
    """Each class of each named world is drawn (its mask pixels are the object's), named only when visible, and
    no caption word the noun tagger picks for a prompt is a colour."""
    from datasets.nouns import extract_words

    spec = replace(WORLDS[world], image_size=48)
    words = [w for c in spec.classes for w in (c.name, *c.synonyms)]
    assert len(set(words)) == len(words) and len({c.colour for c in spec.classes}) == len(spec.classes)
    colours, drawn = {c.colour for c in spec.classes}, set()
    for i in range(150):
        rng = sample_rng(2, "train", i)
        _, mask, objects = render_scene(rng, spec)
        for label in {o.label for o in objects}:
            assert (mask == label).sum() == sum(o.visible for o in objects if o.label == label)
        drawn |= {o.label for o in objects if o.visible > 0}
        caption = caption_for(objects, rng, spec)
        assert classes_in_caption(caption, spec) <= {o.label for o in nameable(objects)}, caption
        assert not set(extract_words(caption)) & colours, caption
    assert drawn == set(range(1, len(spec.classes) + 1))
