"""demo/demo_seg.py --input FOLDER|GLOB|LIST.txt with the tiny golden checkpoint on CPU: label maps a program reads
back (equal to the one-image path's), classes.json, shares.csv, errors.csv, reruns, refusals and Ctrl-C."""

import csv
import importlib.util
import json
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from helpers_commands import start
from PIL import Image

from segmentation.datasets import VOCABULARY_PRESETS
from segmentation.evaluation import GroupViTSegInference, build_segmentor
from segmentation.image_files import list_images, read_image
from segmentation.inference import segment_image
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CKPT = str(REPO / "tests" / "golden" / "tiny_official_ckpt.pth")
spec = importlib.util.spec_from_file_location("demo_seg_folder", REPO / "demo" / "demo_seg.py")
demo_seg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo_seg)
NEAR_TIE = 1e-4  # the golden tests' near tie: a pixel whose two best scores differ by less may flip
GOOD = {"a.jpg": ("astronaut", (96, 80)), "sub/b.png": ("chelsea", (64, 90)),
        "sub/deeper/c.jpg": ("coffee", (96, 80))}  # a.jpg and c.jpg: one size, one encoder pass


def write_image(path: Path, picture: str, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = cv2.resize(getattr(skimage.data, picture)(), size, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """Three good images in nested folders, a corrupt one, a too-thin one and a text file (not an input)."""
    root = tmp_path_factory.mktemp("photos")
    for name, (picture, size) in GOOD.items():
        write_image(root / name, picture, size)
    data = (root / "a.jpg").read_bytes()
    (root / "sub" / "broken.jpg").write_bytes(data[:len(data) // 2])  # truncated
    Image.new("RGB", (400, 2)).save(root / "thin.png")  # 2048x10 after the resize: thinner than a patch
    (root / "notes.txt").write_text("not an image\n")
    return root


def run_folder(spec: str, out: Path, *extra: str) -> int:
    """demo_seg.py on many images; its exit code (0, or 1 when some image failed)."""
    try:
        demo_seg.main(["--resume", CKPT, "--input", spec, "--output_dir", str(out), "--device", "cpu",
                       "--workers", "0", *extra])
    except SystemExit as e:
        return e.code
    return 0


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def label_maps(out: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(out / "labels").as_posix(): np.asarray(Image.open(p))
            for p in sorted((out / "labels").rglob("*.png"))}


@pytest.fixture(scope="module")
def folder_run(photos, tmp_path_factory) -> tuple[Path, int, list[int]]:
    """The photos folder in one batch of 5 (2 fail), read by one worker; the exit code and the encoder's batches."""
    out = tmp_path_factory.mktemp("out")
    passes, crop_rows = [], GroupViTSegInference.crop_rows
    GroupViTSegInference.crop_rows = lambda self, crops: passes.append(len(crops)) or crop_rows(self, crops)
    try:
        code = run_folder(str(photos), out, "--workers", "1", "--batch-size", "5")
    finally:
        GroupViTSegInference.crop_rows = crop_rows
    return out, code, sorted(passes)


def test_folder_writes_maps_tables_and_errors(photos, folder_run):
    out, code, passes = folder_run
    assert code == 1  # two images failed
    assert passes == [1, 2]  # a.jpg and sub/deeper/c.jpg through the encoder together
    maps = label_maps(out)
    assert set(maps) == {str(Path(name).with_suffix(".png")) for name in GOOD}
    for name, (_, (width, height)) in GOOD.items():
        assert maps[str(Path(name).with_suffix(".png"))].shape == (height, width)  # the original size
        assert Image.open(out / "labels" / Path(name).with_suffix(".png")).mode == "P"

    errors = {row[0]: row[1] for row in read_csv(out / "errors.csv")[1:]}
    assert set(errors) == {"sub/broken.jpg", "thin.png"}
    assert "truncated or corrupt" in errors["sub/broken.jpg"] and "too thin" in errors["thin.png"]

    classes = json.loads((out / "classes.json").read_text())
    assert classes["classes"][0] == "background" and classes["background"] is True
    assert classes["bg_thresh"] == 0.95 and classes["protocol"]["mode"] == "whole"
    assert len(classes["palette"]) == len(classes["classes"]) == 21
    rows = read_csv(out / "shares.csv")
    assert rows[0] == ["image", *classes["classes"]]
    assert [row[0] for row in rows[1:]] == sorted(GOOD)
    for row in rows[1:]:
        label = maps[str(Path(row[0]).with_suffix(".png"))]
        expected = np.bincount(label.ravel(), minlength=21) / label.size
        assert np.allclose([float(x) for x in row[1:]], expected, atol=1e-6)
        assert abs(sum(float(x) for x in row[1:]) - 1) < 1e-4
    palette = np.array(Image.open(out / "labels" / "a.png").getpalette()[:63]).reshape(21, 3)
    assert palette.tolist() == classes["palette"]


def test_label_maps_equal_the_one_image_path(photos, folder_run, tiny_model):
    """Batched through the encoder with other images, each map is the one-image path's (outside near ties)."""
    out, _, _ = folder_run
    dataset_cfg, meta = VOCABULARY_PRESETS["voc"]
    seg_model = build_segmentor(tiny_model, meta, dataset_cfg, opts=["test_cfg.mode=whole"])
    for name in GOOD:
        _, sample = segment_image(seg_model, read_image(photos / name))
        alone = sample.pred_sem_seg.data[0].numpy()
        top2 = sample.seg_logits.data.topk(2, dim=0).values  # [2, H, W]
        stable = (top2[0] - top2[1] >= NEAR_TIE).numpy()
        folder = np.asarray(Image.open(out / "labels" / Path(name).with_suffix(".png")))
        assert stable.mean() > 0.9
        assert np.array_equal(folder[stable], alone[stable]), name


def test_glob_and_list_file_name_the_same_images(photos, folder_run, tmp_path):
    out, _, _ = folder_run
    listing = tmp_path / "list.txt"
    listing.write_text(f"{photos / 'sub' / 'b.png'}\n\n# a comment\n{photos / 'sub' / 'deeper' / 'c.jpg'}\n")
    names = [image.name for image in list_images(str(listing))]
    assert names == [(photos / name).relative_to("/") for name in ("sub/b.png", "sub/deeper/c.jpg")]  # outside
    assert run_folder(str(listing), tmp_path / "list") == 0
    assert len(label_maps(tmp_path / "list")) == 2

    assert run_folder(f"{photos}/**/*.jpg", tmp_path / "glob", "--vis", "input_pred") == 1  # sub/broken.jpg
    glob_maps = label_maps(tmp_path / "glob")
    assert set(glob_maps) == {"a.png", "sub/deeper/c.png"}
    pictures = tmp_path / "glob" / "vis_imgs" / "input_pred"
    assert sorted(p.relative_to(pictures).as_posix() for p in pictures.rglob("*.png")) == ["a.png", "sub/deeper/c.png"]
    assert np.array_equal(glob_maps["a.png"], label_maps(out)["a.png"])


def test_rerun_skips_done_images_and_refuses_other_classes(photos, tmp_path, capsys):
    out = tmp_path / "out"
    for name in ("a.jpg", "sub/b.png"):
        (tmp_path / "imgs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "imgs" / name).write_bytes((photos / name).read_bytes())
    listing = tmp_path / "list.txt"
    listing.write_text("imgs/a.jpg\n")  # relative to the list's folder
    assert run_folder(str(listing), out) == 0
    capsys.readouterr()
    first = (out / "labels" / "imgs" / "a.png").stat().st_mtime_ns
    listing.write_text("imgs/a.jpg\nimgs/sub/b.png\n")
    assert run_folder(str(listing), out) == 0
    assert "segmented 1 images into" in capsys.readouterr().out.splitlines()[-1]
    assert (out / "labels" / "imgs" / "a.png").stat().st_mtime_ns == first  # skipped, not rewritten
    assert [row[0] for row in read_csv(out / "shares.csv")[1:]] == ["imgs/a.jpg", "imgs/sub/b.png"]

    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="holds another run's label maps .*differs in: classes"):
        run_folder(str(listing), out, "--vocab", "cup", "--vocab-only")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "shares.csv").write_text("the user's own table\n")
    with pytest.raises(UserError, match="shares.csv exists but .*classes.json does not"):
        run_folder(str(listing), tmp_path / "mine")
    assert (tmp_path / "mine" / "shares.csv").read_text() == "the user's own table\n"


def test_bad_inputs_are_one_line(tmp_path):
    with pytest.raises(UserError, match="no images found in"):
        run_folder(str(tmp_path), tmp_path / "out")
    with pytest.raises(UserError, match="^http://127.0.0.1:8000/cat.jpg is a URL: images are read from local files"):
        run_folder("http://127.0.0.1:8000/cat.jpg", tmp_path / "out")


@pytest.mark.slow
def test_sigint_mid_folder_leaves_complete_maps_and_the_rerun_completes(tmp_path):
    photos = tmp_path / "photos"
    for i in range(12):
        write_image(photos / f"img{i:02d}.jpg", ("astronaut", "chelsea", "coffee")[i % 3], (80 + i, 72))
    out = tmp_path / "out"
    argv = [REPO / "demo" / "demo_seg.py", "--resume", CKPT, "--input", photos, "--output_dir", out, "--device", "cpu",
            "--batch-size", "1", "--workers", "1"]
    command = start(argv, tmp_path / "stderr.txt", new_session=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("labels/*.png")) and time.monotonic() < deadline and command.poll() is None:
        time.sleep(0.05)
    command.send_signal(signal.SIGINT)
    assert command.wait(30) == 130, command.stderr()
    assert "interrupted (SIGINT) while segmenting images" in command.stderr()
    done = list(out.glob("labels/*.png"))
    assert 0 < len(done) < 12
    assert not [p for p in out.rglob("*") if p.name.endswith(".partial")]
    for path in done:
        assert np.asarray(Image.open(path)).shape == (72, 80 + int(path.stem[3:]))  # complete PNGs
    assert len(read_csv(out / "shares.csv")) == len(done) + 1

    assert run_folder(str(photos), out) == 0
    assert len(list(out.glob("labels/*.png"))) == 12
    assert len(read_csv(out / "shares.csv")) == 13
