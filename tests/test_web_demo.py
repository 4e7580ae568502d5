"""demo/app.py: the page's function without a browser, then the page itself in Debian's headless Chromium.

The browser test saves screenshots under $GROUPVIT_TEST_ARTIFACTS (default: test-artifacts/ at the repository root).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CKPT = str(REPO / "tests" / "golden" / "tiny_official_ckpt.pth")
COFFEE = REPO / "demo" / "examples" / "coffee.jpg"
ASTRONAUT = REPO / "demo" / "examples" / "astronaut.jpg"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # headless; Playwright adds a fresh profile folder
VOCAB = "cup, saucer, spoon, table"
SERVER_START_S = 180
LOOPBACK = ("http://127.0.0.1:", "data:", "blob:")


def artifacts_dir() -> Path:
    path = Path(os.environ.get("GROUPVIT_TEST_ARTIFACTS", REPO / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("groupvit_web_app", REPO / "demo" / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def segmenter(app):
    model, cfg, random_weights, world = app.load_model(app.parse_args(["--resume", CKPT, "--device", "cpu"]))
    assert not random_weights and world is None
    return app.Segmenter(model, cfg, random_weights)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    (folder / "notes.txt").write_text("hello, not an image\n")
    (folder / "fake.png").write_text("hello, not an image either\n")
    Image.new("1", (12_000, 10_000)).save(folder / "giant.png")  # 120 megapixels, a few kB on disk
    Image.new("1", (20_000, 16_000)).save(folder / "bomb.png")  # 320 megapixels: over Pillow's own bomb limit
    Image.new("RGB", (4000, 10)).save(folder / "thin.png")  # 2048x5 after the test pipeline's resize
    (folder / "empty.jpg").write_bytes(b"")
    return {path.stem: path for path in folder.iterdir()}


def test_good_input_gives_every_picture_and_the_class_table(app, segmenter):
    result = app.segment_page(segmenter, COFFEE, VOCAB, "0", app.OUTPUT_MODES)
    assert result.message.startswith("Segmented a 600×400 image into ")
    assert set(result.pictures) == set(app.OUTPUT_MODES)
    assert len(result.pictures["all_groups"]) == 2  # the tiny model has two grouping stages
    for pictures in result.pictures.values():
        for picture in pictures:
            assert picture.shape == (400, 600, 3) and picture.dtype == np.uint8
    names = [row[0] for row in result.table]
    assert names and set(names) <= {"background", "cup", "saucer", "spoon", "table"}
    shares = [float(row[1].rstrip("%")) for row in result.table]
    assert shares == sorted(shares, reverse=True) and abs(sum(shares) - 100) < 0.5

    only_final = app.segment_page(segmenter, COFFEE, VOCAB, None, ["final_group"])
    assert set(only_final.pictures) == {"final_group"}


def test_page_matches_the_cli_demo(app, segmenter, tmp_path):
    """Same classes and label map as demo_seg.py --vocab ... --vocab-only (the same library path)."""
    from demo.demo_seg import main as demo_seg

    vocab = "person, rocket, flag"
    demo_seg(["--resume", CKPT, "--input", str(ASTRONAUT), "--output_dir", str(tmp_path), "--device", "cpu",
              "--vocab", vocab, "--vocab-only", "--vis", "pred"])
    pred = np.array(Image.open(tmp_path / "vis_imgs" / "pred" / "astronaut.png"))
    ids, counts = np.unique(pred, return_counts=True)
    classes = ["background", "person", "rocket", "flag"]
    expected = sorted(((classes[i], f"{100 * n / pred.size:.1f}%") for i, n in zip(ids, counts, strict=True)),
                      key=lambda row: -float(row[1][:-1]))
    result = app.segment_page(segmenter, ASTRONAUT, vocab, None, [])
    assert [tuple(row) for row in result.table] == expected


def test_presets_keep_the_dataset_classes_colours_and_config():
    from segmentation.datasets import (
        CONTEXT_CLASSES,
        VOC_CLASSES,
        GroupViTPascalContextDataset,
        preset_vocabulary,
        resolve_vocabulary,
    )

    dataset, meta = resolve_vocabulary(preset_vocabulary("context"))
    assert dataset == "context" and tuple(meta["classes"]) == CONTEXT_CLASSES
    assert meta["palette"] == [list(c) for c in GroupViTPascalContextDataset.METAINFO["palette"]]
    dataset, meta = resolve_vocabulary(preset_vocabulary("voc") + ", teapot")
    assert dataset == "voc" and tuple(meta["classes"]) == (*VOC_CLASSES, "teapot")
    dataset, meta = resolve_vocabulary(" cup,saucer , Cup, background")
    assert dataset == "voc" and meta["classes"] == ["background", "cup", "saucer"]


@pytest.mark.parametrize("preset", ["ade20k", "coco_stuff", "cityscapes"])
def test_presets_without_background(preset):
    """ADE20K, COCO-Stuff and Cityscapes have no background class: their vocabulary is every class, it resolves to
    the dataset (no threshold: every pixel gets a class), and a vocabulary of its own adds a black background."""
    from segmentation.datasets import VOCABULARY_PRESETS, preset_vocabulary, resolve_vocabulary, with_vocab

    cfg_path, preset_meta = VOCABULARY_PRESETS[preset]
    assert preset_vocabulary(preset) == ", ".join(preset_meta["classes"]) and "background" not in preset_meta["classes"]
    dataset, meta = resolve_vocabulary(preset_vocabulary(preset))
    assert dataset == preset and meta["classes"] == list(preset_meta["classes"])
    assert meta["palette"] == [list(c) for c in preset_meta["palette"]]
    from segmentation.evaluation import load_seg_config

    assert load_seg_config(cfg_path).test_cfg.bg_thresh is None
    own = with_vocab(preset_meta, ["teapot"], vocab_only=True)
    assert own == {"classes": ["background", "teapot"], "palette": [[0, 0, 0], own["palette"][1]]}


@pytest.mark.parametrize("image, vocab, thresh, message", [
    (None, VOCAB, None, "no image: upload one or pick an example"),
    (COFFEE, " , ", None, "the vocabulary is empty"),
    (COFFEE, "background", None, "the vocabulary is empty"),
    ("notes", VOCAB, None, "`notes.txt` is not an image that can be read"),
    ("fake", VOCAB, None, "`fake.png` is not an image that can be read"),
    ("giant", VOCAB, None, "`giant.png` is too large \\(12000×10000 pixels\\): at most 100 megapixels"),
    ("bomb", VOCAB, None, "`bomb.png` is too large \\(20000×16000 pixels\\): at most 100 megapixels"),
    ("thin", VOCAB, None, "the image is too small or too thin: after the test pipeline's resize it is 2048×5 "
                          "pixels, less than one 16×16 patch"),
    ("empty", VOCAB, None, "`empty.jpg` is empty \\(0 bytes\\)"),
    (COFFEE, VOCAB, "2", "the background threshold must be between 0 and 1, not 2"),
    (COFFEE, VOCAB, "high", "the background threshold must be a number between 0 and 1, not 'high'"),
])
def test_bad_input_is_a_message(app, segmenter, bad_files, image, vocab, thresh, message):
    path = bad_files[image] if isinstance(image, str) else image
    result = app.segment_page(segmenter, path, vocab, thresh, app.OUTPUT_MODES)
    assert re.fullmatch(f"\\*\\*Error:\\*\\* {message}.*", result.message)
    assert not result.pictures and not result.table


def test_huge_image_is_downscaled(app, segmenter, tmp_path):
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), np.full((3000, 6000, 3), (40, 120, 200), np.uint8))
    result = app.segment_page(segmenter, path, VOCAB, None, [])
    assert result.message.startswith("Segmented a 4096×2048 image")
    assert "downscaled from 6000×3000 to 4096×2048 pixels" in result.message


def test_a_bug_is_a_message_and_not_a_traceback(app, segmenter, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(segmenter, "segment", broken)
    result = app.segment_page(segmenter, COFFEE, VOCAB, None, app.OUTPUT_MODES)
    assert result.message == "**Error:** the segmentation failed unexpectedly; the server log has the details."
    assert "boom" in caplog.text  # the traceback goes to the server log


def test_random_weights_are_announced_in_the_page(app, segmenter):
    def warning_visible(page) -> bool:
        (block,) = [b for b in page.blocks.values() if getattr(b, "elem_id", None) == "weights-warning"]
        return block.visible

    assert app.parse_args([]).host == "127.0.0.1"
    model, cfg, random_weights, _ = app.load_model(app.parse_args(["--device", "cpu"]))
    assert random_weights
    assert warning_visible(app.build_page(app.Segmenter(model, cfg, random_weights)))
    assert not warning_visible(app.build_page(segmenter))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    try:
        with opener.open(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def world_ckpt(tmp_path_factory) -> Path:
    """A checkpoint as the quickstart writes one (configs/quickstart.yml, stored config included), random weights."""
    from omegaconf import OmegaConf

    from models import build_model
    from utils.config import load_config

    cfg = OmegaConf.to_container(load_config(REPO / "configs" / "quickstart.yml"), resolve=True)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("world") / "checkpoint.pth"
    torch.save({"model": build_model(cfg["model"]).state_dict(), "config": cfg}, path)
    return path


@pytest.fixture(scope="module")
def world_image(tmp_path_factory) -> Path:
    """An 80 px image of the quickstart's synthetic world."""
    from datasets.synthetic import DEFAULT_WORLD, WORLDS, render_scene

    image, _, _ = render_scene(np.random.default_rng(0), WORLDS[DEFAULT_WORLD])
    path = tmp_path_factory.mktemp("world_image") / "world.png"
    Image.fromarray(image).save(path)
    return path


def test_a_quickstart_checkpoint_offers_its_world(app, world_ckpt, world_image):
    """The world's classes are a preset, segmented with the synthetic config (no resize, the tuned threshold);
    the pictures of an 80 px image are drawn enlarged to PICTURE_SIDE or more, so that the class names fit."""
    from datasets.synthetic import DEFAULT_WORLD, WORLDS

    model, cfg, _, world = app.load_model(app.parse_args(["--resume", str(world_ckpt), "--device", "cpu"]))
    segmenter = app.Segmenter(model, cfg, world=world)
    vocab = segmenter.presets()["Quickstart world classes"]
    assert vocab == ", ".join(WORLDS[DEFAULT_WORLD].class_names[1:])
    seg_model = segmenter.segmentors.get(vocab)
    assert seg_model.classes == WORLDS[DEFAULT_WORLD].class_names and seg_model.bg_thresh == 0.7
    assert not [step for step in seg_model.test_pipeline if step["type"] == "Resize"]
    result = app.segment_page(segmenter, world_image, vocab, None, app.OUTPUT_MODES)
    assert result.message.startswith("Segmented a 80×80 image")
    factor = -(-app.PICTURE_SIDE // 80)
    assert [picture.shape for pictures in result.pictures.values() for picture in pictures] == \
        [(80 * factor, 80 * factor, 3)] * 3  # input_pred_label, final_group, all_groups' one stage


def test_names_one_per_line_are_separate_classes(app, segmenter):
    result = app.segment_page(segmenter, COFFEE, "cup\nsaucer\nspoon", None, [])
    assert {row[0] for row in result.table} <= {"background", "cup", "saucer", "spoon"}
    assert segmenter.segmentors.get("cup\nsaucer\nspoon").classes == ("background", "cup", "saucer", "spoon")


@contextlib.contextmanager
def chromium_page(playwright) -> Iterator:
    """A page in headless Debian Chromium, with a fresh profile, closed on the way out."""
    with tempfile.TemporaryDirectory() as profile:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1400})
        try:
            page = browser.new_page()
            page.set_default_timeout(90_000)
            yield page
        finally:
            browser.close()


@contextlib.contextmanager
def serving(tmp_path: Path, checkpoint: str | Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """demo/app.py with ``checkpoint`` on a free loopback port; its URL and process."""
    port = free_port()
    err_path = tmp_path / "app.stderr"
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "PYTHONPATH": ""}
    with open(tmp_path / "app.stdout", "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([sys.executable, str(REPO / "demo" / "app.py"), "--resume", str(checkpoint), "--device",
                                 "cpu", "--port", str(port)], cwd=tmp_path, env=env, stdout=out, stderr=err)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                state = f"exited with {proc.returncode}" if proc.poll() is not None else f"not up in {SERVER_START_S} s"
                pytest.fail(f"demo/app.py {state}; its stderr:\n{err_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def server(tmp_path) -> Iterator[tuple[str, subprocess.Popen]]:
    """demo/app.py with the tiny checkpoint."""
    with serving(tmp_path, CKPT) as served:
        yield served


def table_rows(text: str) -> list[list[str]]:
    return [[name, f"{share}%"] for name, share in re.findall(r"^\s*([A-Za-z][\w ]*?)\s+(\d+\.\d)%\s*$", text, re.M)]


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium is not installed (/usr/bin/chromium; .ci/run "
                                                  "installs it with apt-get install chromium chromium-driver)")
def test_page_in_headless_chromium(app, segmenter, server, bad_files):
    from playwright.sync_api import expect, sync_playwright

    url, proc = server
    outside: list[str] = []
    with sync_playwright() as playwright, chromium_page(playwright) as page:
        page.on("request", lambda req: None if req.url.startswith(LOOPBACK) else outside.append(req.url))
        page.goto(url)
        expect(page.locator("#weights-warning")).to_be_hidden()

        # a photo, a vocabulary, a threshold: the three pictures and the class table
        page.locator("#input-image input[type=file]").set_input_files(COFFEE)
        page.locator("#input-image img").wait_for()
        page.locator("#vocab textarea").fill(VOCAB)
        page.locator("#bg-thresh textarea, #bg-thresh input").fill("0")
        page.locator("#submit").click()
        expect(page.locator("#status")).to_contain_text("Segmented a 600×400 image")
        for picture in ("#out-label img", "#out-final img"):
            expect(page.locator(picture)).to_be_visible()
            assert page.locator(picture).evaluate("img => img.complete && img.naturalWidth") == 600
        expect(page.locator("#out-groups img")).to_have_count(2)
        expect(page.locator("#class-table")).to_contain_text("%")
        expected = app.segment_page(segmenter, COFFEE, VOCAB, "0", app.OUTPUT_MODES).table
        assert table_rows(page.locator("#class-table").inner_text()) == expected
        page.screenshot(path=artifacts_dir() / "web_demo.png", full_page=True)

        # bad input: a message in the page each time
        page.locator("#vocab textarea").fill("")
        page.locator("#submit").click()
        expect(page.locator("#status")).to_contain_text("Error: the vocabulary is empty")
        expect(page.locator("#out-label img")).to_have_count(0)

        page.locator("#input-image button[aria-label='Remove Image']").click()
        page.locator("#input-image input[type=file]").set_input_files(bad_files["notes"])
        expect(page.get_by_text("Invalid file type: notes.txt")).to_be_visible()  # refused by Gradio's page

        page.locator("#input-image input[type=file]").set_input_files(bad_files["fake"])  # passes as image/png
        page.locator("#input-image img").wait_for(state="attached")
        page.locator("#vocab textarea").fill(VOCAB)
        page.locator("#submit").click()
        expect(page.locator("#status")).to_contain_text("Error: fake.png is not an image that can be read")
        page.screenshot(path=artifacts_dir() / "web_demo_bad_input.png", full_page=True)

        # still serving: a bundled example segments
        page.locator("#input-image button[aria-label='Remove Image']").click()
        page.locator("#examples button:has(img[src$='astronaut.jpg'])").click()
        page.locator("#input-image img").wait_for()
        page.locator("#submit").click()
        expect(page.locator("#status")).to_contain_text("Segmented a 512×512 image")
    assert proc.poll() is None and answers(url)
    assert not outside, f"the page fetched from outside this machine: {outside}"


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's Chromium is not installed (/usr/bin/chromium)")
def test_world_image_in_headless_chromium(app, world_ckpt, world_image, tmp_path):
    """As a quickstart user sees it: the world's preset button, and an 80 px image shown at PICTURE_HEIGHT in the
    input, both result panels and every all_groups picture alike, enlarged without smoothing."""
    from playwright.sync_api import expect, sync_playwright

    with serving(tmp_path, world_ckpt) as (url, _), sync_playwright() as playwright, \
            chromium_page(playwright) as page:
        page.goto(url)
        page.get_by_role("button", name="Quickstart world classes").click()
        expect(page.locator("#vocab textarea")).to_have_value("circle, square, triangle, star, ring, cross, "
                                                              "heart, diamond")
        page.locator("#input-image input[type=file]").set_input_files(world_image)
        page.locator("#input-image img").wait_for()
        page.locator("#submit").click()
        expect(page.locator("#status")).to_contain_text("Segmented a 80×80 image")
        expect(page.locator("#out-groups img")).to_have_count(1)  # the quickstart model: one grouping stage
        page.locator("#out-label img").wait_for()
        page.screenshot(path=artifacts_dir() / "web_demo_world.png", full_page=True)
        for picture in ("#input-image img", "#out-label img", "#out-final img", "#out-groups img"):
            shown = page.locator(picture).first.evaluate(
                "img => [img.getBoundingClientRect().height, getComputedStyle(img).imageRendering, "
                "getComputedStyle(img).objectFit]")
            assert shown == [app.PICTURE_HEIGHT, "pixelated", "contain"], picture
