"""demo/demo_seg.py with the tiny golden checkpoint on CPU: datasets, open vocabulary, every visualisation mode."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from segmentation.datasets import (
    ADE20K_CLASSES,
    CITYSCAPES_CLASSES,
    COCO_OBJECT_CLASSES,
    COCO_STUFF_CLASSES,
    CONTEXT_CLASSES,
    VOC_CLASSES,
    parse_vocab,
)
from segmentation.vis import VIS_MODES, check_vis_modes
from utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
CKPT = str(REPO / "tests" / "golden" / "tiny_official_ckpt.pth")
spec = importlib.util.spec_from_file_location("demo_seg", REPO / "demo" / "demo_seg.py")
demo_seg = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo_seg)


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "astronaut.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


def run_demo(image: Path, out: Path, *extra: str) -> list[Path]:
    return demo_seg.main(["--resume", CKPT, "--input", str(image), "--output_dir", str(out), *extra])


def read_pred(out: Path, name: str) -> np.ndarray:
    pred = Image.open(out / "vis_imgs" / "pred" / f"{name}.png")
    assert pred.mode == "P"
    return np.array(pred)


def test_every_vis_mode_writes_files_for_a_photo(astronaut, tmp_path, capsys):
    written = run_demo(astronaut, tmp_path, "--device", "cpu", "--vis", *VIS_MODES)
    expected = {f"{mode}/astronaut.png" for mode in VIS_MODES if mode != "all_groups"}
    expected |= {"all_groups/astronaut_layer0.png", "all_groups/astronaut_layer1.png"}  # tiny model: 2 stages
    assert {str(p.relative_to(tmp_path / "vis_imgs")) for p in written} == expected
    for path in written:
        assert path.is_file() and Image.open(path).size == (512, 512)  # the original size

    pred = read_pred(tmp_path, "astronaut")
    assert pred.max() < len(VOC_CLASSES)
    palette = np.array(Image.open(tmp_path / "vis_imgs" / "pred" / "astronaut.png").getpalette()[:63]).reshape(21, 3)
    assert palette[15].tolist() == [192, 128, 128]  # VOC 'person' colour
    # input_pred changes exactly the non-background pixels of the input
    image = np.array(Image.open(tmp_path / "vis_imgs" / "input" / "astronaut.png")).astype(int)
    blended = np.array(Image.open(tmp_path / "vis_imgs" / "input_pred" / "astronaut.png")).astype(int)
    assert np.array_equal(image[pred == 0], blended[pred == 0])
    assert (np.abs(image - blended).sum(-1)[pred != 0] > 0).mean() > 0.9
    assert np.abs(image - skimage.data.astronaut().astype(int)).mean() < 8  # de-normalised and resized back
    assert "astronaut.jpg: " in capsys.readouterr().out


@pytest.mark.parametrize("dataset, classes", [("voc", VOC_CLASSES), ("context", CONTEXT_CLASSES),
                                              ("coco", COCO_OBJECT_CLASSES), ("ade20k", ADE20K_CLASSES),
                                              ("coco_stuff", COCO_STUFF_CLASSES), ("cityscapes", CITYSCAPES_CLASSES)])
def test_datasets(dataset, classes, tmp_path, capsys):
    image = REPO / "demo" / "examples" / "coffee.jpg"
    run_demo(image, tmp_path, "--dataset", dataset, "--vis", "pred", "input_pred_label")
    pred = read_pred(tmp_path, "coffee")
    assert pred.shape == (400, 600) and pred.max() < len(classes)
    found = capsys.readouterr().out.split("coffee.jpg: ", 1)[1].splitlines()[0]
    assert {part.rsplit(" ", 1)[0] for part in found.split(", ")} == {classes[i] for i in np.unique(pred)}


def test_open_vocabulary(tmp_path, capsys):
    image = REPO / "demo" / "examples" / "chelsea.jpg"
    run_demo(image, tmp_path / "only", "--vocab", "cat, sofa", "tabby cat", "--vocab-only", "--vis", "pred")
    pred = read_pred(tmp_path / "only", "chelsea")
    assert pred.max() <= 3
    names = {p.rsplit(" ", 1)[0] for p in capsys.readouterr().out.split("chelsea.jpg: ", 1)[1].splitlines()[0]
             .split(", ")}
    assert names <= {"background", "cat", "sofa", "tabby cat"} and names - {"background"}

    run_demo(image, tmp_path / "extra", "--dataset", "voc", "--vocab", "cat", "whiskers", "--vis", "pred")
    pred = read_pred(tmp_path / "extra", "chelsea")
    assert pred.max() <= 21  # 'cat' is already a VOC class: one new class, index 21
    assert len(Image.open(tmp_path / "extra" / "vis_imgs" / "pred" / "chelsea.png").getpalette()) >= 22 * 3


def test_vocab_parsing():
    assert parse_vocab(["cat, dog", " traffic  cone ", "Cat", ","]) == ["cat", "dog", "traffic cone"]
    assert parse_vocab(["cup\nsaucer\r\nspoon, fork"]) == ["cup", "saucer", "spoon", "fork"]  # one per line too


@pytest.mark.parametrize("args, message", [
    (["--input", "missing.jpg"], "input image not found: missing.jpg"),
    (["--input", str(REPO / "README.md")], ".*README.md is not an image that can be read \\(expected a JPEG, PNG"),
    (["--vis", "groups"], "unknown visualisation mode\\(s\\) groups; valid modes: input, pred, input_pred, "
                          "input_pred_label, all_groups, first_group, final_group"),
    (["--vocab", " , "], "empty vocabulary"),
    (["--vocab-only"], "--vocab-only needs class names with --vocab"),
    (["--resume", str(REPO / "README.md")], "is not a PyTorch checkpoint"),
    (["--cfg", str(REPO / "tests" / "golden" / "tiny_model.yml")], "is not an experiment config"),
    (["--cfg", str(REPO / "configs" / "group_vit_gcc_yfcc_30e.yml")], "checkpoint does not fit the model"),
])
def test_bad_input_is_a_user_error(args, message, tmp_path):
    argv = ["--resume", CKPT, "--input", str(REPO / "demo" / "examples" / "coffee.jpg"), "--output_dir",
            str(tmp_path)]
    with pytest.raises(UserError, match=message):
        demo_seg.main(argv + args)
    with pytest.raises(UserError):
        check_vis_modes(["pred", "nope"])


@pytest.mark.slow
def test_cli_runs_and_fails_with_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": ""}
    ok = subprocess.run([sys.executable, str(REPO / "demo" / "demo_seg.py"), "--resume", CKPT, "--input",
                         str(REPO / "demo" / "examples" / "coffee.jpg"), "--output_dir", str(tmp_path)],
                        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (tmp_path / "vis_imgs" / "input_pred_label" / "coffee.png").is_file()
    assert (tmp_path / "vis_imgs" / "final_group" / "coffee.png").is_file()

    bad = subprocess.run([sys.executable, str(REPO / "demo" / "demo_seg.py"), "--resume", CKPT, "--input",
                          str(tmp_path / "missing.png")], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and bad.stderr == f"error: input image not found: {tmp_path / 'missing.png'}\n"


def test_an_earlier_runs_pictures_are_kept(astronaut, tmp_path):
    """A second run on the same image into the same folder refuses, every picture as it was; --overwrite replaces."""
    written = run_demo(astronaut, tmp_path, "--device", "cpu", "--vis", "pred", "all_groups")
    before = {path: path.read_bytes() for path in written}
    with pytest.raises(UserError, match=r"astronaut.* exists already: refusing .*pictures of an earlier run.*"
                                        r"--overwrite"):
        run_demo(astronaut, tmp_path, "--device", "cpu", "--vis", "all_groups", "--vocab", "flag")
    assert {path: path.read_bytes() for path in written} == before
    rewritten = run_demo(astronaut, tmp_path, "--device", "cpu", "--vis", "pred", "--vocab", "flag", "--overwrite")
    assert rewritten == [tmp_path / "vis_imgs" / "pred" / "astronaut.png"]
