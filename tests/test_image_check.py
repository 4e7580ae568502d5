"""The one image-input check (datasets/image_check.py) and the front ends that use it: the CLI demo's reader, the
segmentation datasets' loading step, the segmentor's one-patch check, and the convert tools' skip-and-count."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets.image_check import MAX_PIXELS, BadImage, BadImageCount, check_fits, check_image
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def encoded(size: tuple[int, int], fmt: str = "JPEG", seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG with a huge size and a few kB on disk (1-bit pixels compress to almost nothing)."""
    buffer = io.BytesIO()
    Image.new("1", (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def bad_images() -> dict[str, bytes]:
    jpeg = encoded((64, 48))
    return {"empty": b"", "text": b"hello, not an image\n", "truncated": jpeg[:len(jpeg) // 2],
            "bomb": bomb_png(20_000, 12_000)}  # 240 megapixels: Pillow's own check raises before the size is known


@pytest.mark.parametrize(("kind", "message"), [
    ("empty", r"^x\.jpg is empty \(0 bytes\)$"),
    ("text", r"^x\.jpg is not an image that can be read \(expected a JPEG, PNG, WebP, BMP or TIFF file\)$"),
    ("truncated", r"^x\.jpg is a truncated or corrupt JPEG image \(image file is truncated"),
    ("bomb", r"^x\.jpg is too large \(20000×12000 pixels\): at most 100 megapixels$"),
])
def test_bad_images_are_refused_with_one_line(bad_images, kind, message):
    with pytest.raises(BadImage, match=message) as info:
        check_image(bad_images[kind], "x.jpg")
    assert "\n" not in str(info.value) and isinstance(info.value, UserError)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_good_images_pass_with_their_size(fmt):
    assert check_image(encoded((33, 17), fmt), "ok") == (33, 17)


def test_the_pixel_limit_is_a_parameter():
    assert MAX_PIXELS == 100_000_000
    with pytest.raises(BadImage, match=r"too large \(33×17 pixels\): at most 0\.0005 megapixels"):
        check_image(encoded((33, 17)), "ok", max_pixels=500)


def test_one_patch_check():
    check_fits(16, 16, 16, "a.jpg", "after the resize")
    with pytest.raises(BadImage, match=r"^a\.jpg is too small or too thin: after the resize it is 2048×5 pixels, "
                                       r"less than one 16×16 patch$"):
        check_fits(2048, 5, 16, "a.jpg", "after the resize")


def test_bad_fraction_is_judged_like_the_training_loader():
    count = BadImageCount(0.25, min_judged=8)
    for ok in (False, True, True):
        count.add(ok)
        count.check()  # 1 of 3 bad, but fewer than min_judged read
    with pytest.raises(UserError, match=r"^1 of the 3 images read were bad \(skipped\), more than "
                                        r"--max-bad-fraction=0\.25"):
        count.check(final=True)
    with pytest.raises(UserError, match="between 0 and 1"):
        BadImageCount(1.5)


def test_segmentation_datasets_and_demo_read_through_the_check(tmp_path, bad_images):
    from segmentation.image_files import LoadCheckedImageFromFile, read_image

    good = tmp_path / "good.png"
    good.write_bytes(encoded((20, 10), "PNG"))
    assert LoadCheckedImageFromFile()(dict(img_path=str(good)))["img"].shape == (10, 20, 3)
    assert read_image(good).shape == (10, 20, 3)
    for kind, data in bad_images.items():
        path = tmp_path / f"{kind}.jpg"
        path.write_bytes(data)
        with pytest.raises(BadImage, match=f"^{path}"):
            LoadCheckedImageFromFile()(dict(img_path=str(path)))
        with pytest.raises(BadImage, match=f"^{path}"):
            read_image(path)


def test_segmentor_refuses_an_image_thinner_than_a_patch_after_the_resize():
    """A 4000x10 image becomes 2048x5 under the test pipeline's keep-ratio resize (long side at most 2048)."""
    import torch
    from omegaconf import OmegaConf

    from models import build_model
    from segmentation.datasets import VOCABULARY_PRESETS
    from segmentation.evaluation import build_segmentor
    from segmentation.inference import segment_image

    torch.manual_seed(0)
    model = build_model(OmegaConf.load(ROOT / "tests" / "golden" / "tiny_model.yml").model).eval()
    cfg_path, meta = VOCABULARY_PRESETS["voc"]
    seg_model = build_segmentor(model, meta, cfg_path, opts=["test_cfg.mode=whole"])
    with pytest.raises(BadImage, match=r"^thin\.jpg is too small or too thin: after the test pipeline's resize it "
                                       r"is 2048×5 pixels, less than one 16×16 patch$"):
        segment_image(seg_model, np.zeros((10, 4000, 3), dtype=np.uint8), name="thin.jpg")


@pytest.mark.slow
def test_convert_imagenet_skips_and_counts_bad_images(tmp_path, bad_images):
    """Empty, undecodable and truncated JPEGs are skipped and counted, not packed; above the fraction it fails."""
    folder = tmp_path / "val" / "n01440764"
    folder.mkdir(parents=True)
    for i in range(5):
        (folder / f"good{i}.JPEG").write_bytes(encoded((24, 16), seed=i))
    for kind in ("empty", "text", "truncated"):
        (folder / f"{kind}.JPEG").write_bytes(bad_images[kind])
    command = [sys.executable, "convert_dataset/convert_imagenet.py", str(tmp_path / "val"), "--num-classes", "1",
               "--num-shards", "2"]
    result = subprocess.run([*command, "--shards-out", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "skipped 3 bad image(s) of 8" in result.stderr and result.stderr.count("warning: skipped") == 3
    assert "wrote 5 images, 1 classes, 2 shards" in result.stdout
    names = []
    for shard in sorted((tmp_path / "out").glob("*.tar")):
        with tarfile.open(shard) as tar:
            names += [m.name for m in tar.getmembers() if m.name.endswith(".jpg")]
    assert sorted(names) == [f"good{i}.jpg" for i in range(5)]

    strict = subprocess.run([*command[:-1], "1", "--shards-out", str(tmp_path / "strict"), "--max-bad-fraction", "0.2"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert strict.returncode == 2 and strict.stderr.strip().splitlines()[-1] == (
        "error: 3 of the 8 images read were bad (skipped), more than --max-bad-fraction=0.2; the warnings above "
        "name them")
    assert not list((tmp_path / "strict").glob("*"))  # the only shard, unfinished, was discarded
