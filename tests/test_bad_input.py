"""The bad-input matrix of the user-facing commands, one table.

Every case runs its command as a process of its own (started by ``helpers_commands``, from a Python that has
imported torch and the project once) and must exit with code 2 after exactly one line on stderr that names
the problem (``error: ...``; no traceback), leave the files already in its output folder byte-identical (a log may
only grow) and never run a crafted checkpoint's code. The cases run a few at a time (a module fixture), each
reported as its own test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import helpers_commands as commands
import pytest
import torch
from helpers_train_data import jpeg_bytes, write_caption_shards, write_tiny_setup
from PIL import Image

from utils.cli import run_cli
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_CKPT = ROOT / "tests" / "golden" / "tiny_official_ckpt.pth"
# Files in every case's output folder beforehand ({out}): all must be byte-identical afterwards, log.txt may grow.
PRIOR_FILES = {"config.yml": b"model_name: earlier run\n", "log.txt": b"[earlier run] epoch 0 done\n",
               "seg_results.json": b'{"miou": 12.5}\n', "vis_imgs/input_pred_label/coffee.png": jpeg_bytes(7),
               "notes.txt": b"keep me\n"}


@dataclass(frozen=True)
class Case:
    id: str
    command: tuple[str, ...]  # script and arguments; {name} placeholders are the materials' paths
    message: str  # regex the stderr line must match after 'error: '
    prior: tuple[tuple[str, bytes], ...] = tuple(PRIOR_FILES.items())


M, S, D = "main_group_vit.py", "main_seg.py", "demo/demo_seg.py"
# main_seg.py may replace the earlier results (--overwrite), yet a run that fails must leave them as they were
TRAIN, SEG = (M, "--cfg", "{cfg}", "--output", "{out}"), (S, "--cfg", "{cfg}", "--output", "{out}", "--overwrite")
DEMO = (D, "--resume", "{ckpt}", "--input", "{image}", "--output_dir", "{out}")
CASES = [
    Case("train-unknown-key", (*TRAIN, "--opts", "train.epochz=3"),
         r"unknown config key 'train\.epochz' \(did you mean: train\.epochs.*\?\)"),
    Case("train-wrong-type", (*TRAIN, "--opts", "train.epochs=[1,2]"),
         r"wrong type for config key 'train\.epochs': expected a single value, got '\[1,2\]'"),
    Case("train-wrong-scalar-type", (*TRAIN, "--opts", "train.epochs=abc"),
         r"wrong type for config key 'train\.epochs': expected a number, got 'abc'"),
    Case("train-wrong-type-in-file", (M, "--cfg", "{wrongtype}", "--output", "{out}"),
         r"bad value for config key 'train\.epochs' in .*/wrong_type\.yml: expected a whole number >= 0, got 'abc'"),
    Case("train-empty-config", (M, "--cfg", "{emptycfg}", "--output", "{out}"),
         r"config .*/empty\.yml is empty \(an experiment config names configs/default\.yml in _base_"),
    Case("train-batch-size-0", (*TRAIN, "--batch-size", "0"),
         r"bad value for config key 'data\.batch_size' in --batch-size: expected a whole number >= 1, got 0"),
    Case("train-batch-size-negative", (*TRAIN, "--batch-size", "-3"),
         r"bad value for config key 'data\.batch_size' in --batch-size: expected a whole number >= 1, got -3"),
    Case("train-negative-workers", (*TRAIN, "--opts", "data.num_workers=-2"),  # -1: from the cores
         r"bad value for config key 'data\.num_workers' in --opts item 'data\.num_workers=-2': expected a whole "
         r"number >= -1, got -2"),
    Case("train-image-below-one-patch", (*TRAIN, "--opts", "data.img_aug.img_size=8"),
         r"bad value for config key 'data\.img_aug\.img_size' in the config of .*/tiny_train\.yml: 8 is smaller "
         r"than one patch \(model\.img_encoder\.patch_size=16\)"),
    Case("demo-empty-image", (D, "--resume", "{ckpt}", "--input", "{emptyimage}", "--output_dir", "{out}"),
         r".*/empty\.jpg is empty \(0 bytes\)"),
    Case("demo-truncated-image", (D, "--resume", "{ckpt}", "--input", "{truncated}", "--output_dir", "{out}"),
         r".*/truncated\.jpg is a truncated or corrupt JPEG image \(image file is truncated"),
    Case("demo-thin-image", (D, "--resume", "{ckpt}", "--input", "{thin}", "--output_dir", "{out}"),
         r".*/thin\.png is too small or too thin: after the test pipeline's resize it is 2048×5 pixels, less than "
         r"one 16×16 patch"),
    Case("train-missing-config", (M, "--cfg", "{tmp}/missing.yml", "--output", "{out}"),
         r"config file not found: .*/missing\.yml"),
    Case("train-missing-data-folder", (*TRAIN, "--opts", "data.dataset.meta.tiny_pairs.path={tmp}/nowhere"),
         r"dataset 'tiny_pairs': its 4 shards do not exist: there is no data folder .*/nowhere "
         r"\(data\.dataset\.meta\.tiny_pairs\.path\)"),
    Case("train-shards-match-nothing",
         (*TRAIN, "--opts", "data.dataset.meta.tiny_pairs.prefix=x-{{000000..000002}}.tar"),
         r"dataset 'tiny_pairs': 3 of 3 shards do not exist, e\.g\. .*/pairs/x-000000\.tar"),
    Case("train-only-corrupt-data", (*TRAIN, "--opts", "data.dataset.meta.tiny_pairs.path={tmp}/corrupt"),
         r"no usable sample in 4 shard\(s\) \(.*corrupt/pairs-00000\d\.tar, \.\.\.\): every sample was skipped"),
    Case("eval-wrong-model-size", (*TRAIN, "--eval", "--resume", "{ckpt}", "--opts", "model.img_encoder.embed_dim=48"),
         r"checkpoint does not fit the model: 0 missing, 0 unexpected, 141 shape mismatches; shape mismatches \(141\): "
         r"img_encoder\.pos_embed: checkpoint \[1, 196, 96\] vs model \[1, 196, 48\]; img_encoder\.patch_embed"),
    Case("train-resume-crafted-pickle", (*TRAIN, "--resume", "{evil}"),
         r"refusing to load .*/evil\.pth: its pickle references .*system, which a checkpoint never needs"),
    Case("train-output-is-a-file", (M, "--cfg", "{cfg}", "--output", "{afile}"),
         r"cannot use .*/afile as the output folder: it is a file"),
    Case("train-output-under-a-file", (M, "--cfg", "{cfg}", "--output", "{afile}/run"),
         r"cannot create the output folder .*/afile/run: Not a directory"),
    Case("seg-unknown-vis-mode", (*SEG, "--resume", "{ckpt}", "--vis", "input", "sketch"),
         r"unknown visualisation mode\(s\) sketch; valid modes: input, pred, .*"),
    Case("seg-not-a-checkpoint", (*SEG, "--resume", "{notckpt}"),
         r".*/notckpt\.pth is not a PyTorch checkpoint \(neither a torch\.save archive nor a pickle\)"),
    Case("seg-earlier-results", (S, "--cfg", "{cfg}", "--output", "{out}", "--resume", "{ckpt}"),
         r".*/seg_results\.json exists already: refusing to overwrite the results of an earlier evaluation .*"),
    Case("seg-missing-dataset", (*SEG, "--resume", "{ckpt}", "--opts", "evaluate.seg.opts=[data_root={tmp}/voc]"),
         r"segmentation dataset not found: data_root .*/voc does not exist"),
    Case("demo-non-image-input", (D, "--resume", "{ckpt}", "--input", "{notimage}", "--output_dir", "{out}"),
         r".*/notimage\.jpg is not an image that can be read \(expected a JPEG, PNG, WebP, BMP or TIFF file\)"),
    Case("demo-missing-input", (D, "--resume", "{ckpt}", "--input", "{tmp}/missing.jpg", "--output_dir", "{out}"),
         r"input image not found: .*/missing\.jpg"),
    Case("demo-empty-vocabulary", (*DEMO, "--vocab", " , ", "--vocab-only"), r"empty vocabulary: give class names .*"),
    Case("demo-wrong-model-size", (*DEMO, "--cfg", "{cfg}", "--opts", "model.text_encoder.width=128"),
         r"checkpoint does not fit the model: .*text_encoder\.positional_embedding: checkpoint \[77, 64\] vs model "
         r"\[77, 128\]"),
    Case("demo-crafted-pickle", (D, "--resume", "{evil}", "--input", "{image}", "--output_dir", "{out}"),
         r"refusing to load .*/evil\.pth: its pickle references .*system"),
    Case("demo-output-is-a-file", (D, "--resume", "{ckpt}", "--input", "{image}", "--output_dir", "{afile}"),
         r"cannot use .*/afile as the output folder: it is a file"),
    Case("imagenet-missing-folder", ("convert_dataset/convert_imagenet.py", "{tmp}/missing", "--shards-out", "{out}"),
         r"ImageNet val folder .*/missing not found"),
    Case("imagenet-output-holds-shards",
         ("convert_dataset/convert_imagenet.py", "{tmp}/imagenet", "--num-classes", "1", "--num-shards", "1",
          "--shards-out", "{out}"),
         r".* already holds 1 shard\(s\) like imagenet-val-000000\.tar; remove them or write to another folder",
         prior=(("imagenet-val-000000.tar", b"an earlier shard"),)),
    Case("coco-missing-annotations", ("convert_dataset/convert_coco_object.py", "{tmp}/coco"),
         r"no COCO-Stuff annotations folder: .*/coco/annotations does not exist"),
    Case("redcaps-missing-annotations",
         ("convert_dataset/process_redcaps.py", "{tmp}/missing", "{out}/redcaps12m.parquet"),
         r"annotations folder .*/missing not found"),
    Case("rename-missing-folder", ("convert_dataset/rename_shards.py", "{tmp}/missing", "--prefix", "gcc-train-"),
         r"shard folder .*/missing not found"),
    Case("synthetic-output-is-a-file", ("tools/make_synthetic_data.py", "--out", "{afile}", "--workers", "1"),
         r"cannot use .*/afile as the output folder: it is a file"),
]
if os.geteuid() != 0:  # root may write anywhere
    CASES.append(Case("train-output-not-writable", (M, "--cfg", "{cfg}", "--output", "{readonly}/run"),
                      r"cannot create the output folder .*/readonly/run: Permission denied"))


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def materials(tmp_path_factory) -> dict[str, Path]:
    """The inputs the cases name: a tiny training setup, checkpoints (real, junk, crafted), images, folders."""
    tmp = tmp_path_factory.mktemp("bad_input")
    paths = {"tmp": tmp, "cfg": write_tiny_setup(tmp, extra={"evaluate.task": [], "data.num_workers": 0}),
             "ckpt": GOLDEN_CKPT, "image": ROOT / "demo" / "examples" / "coffee.jpg", "notckpt": tmp / "notckpt.pth",
             "evil": tmp / "evil.pth", "marker": tmp / "PWNED", "afile": tmp / "afile",
             "notimage": tmp / "notimage.jpg", "readonly": tmp / "readonly"}
    write_caption_shards(tmp / "corrupt", 4, 3, name="pairs", corrupt=range(12))
    paths["notckpt"].write_text("model: not a checkpoint\n")
    torch.save({"model": {"w": torch.zeros(1)}, "config": Payload(paths["marker"])}, paths["evil"])
    paths["afile"].write_text("a file, not a folder\n")
    paths["notimage"].write_text("not an image\n")
    paths["wrongtype"] = tmp / "wrong_type.yml"
    paths["wrongtype"].write_text(f"_base_: {paths['cfg']}\ntrain:\n  epochs: abc\n")
    paths["emptycfg"] = tmp / "empty.yml"
    paths["emptycfg"].write_text("")
    paths["emptyimage"] = tmp / "empty.jpg"
    paths["emptyimage"].write_bytes(b"")
    paths["truncated"] = tmp / "truncated.jpg"
    whole = jpeg_bytes(3, size=(64, 48))
    paths["truncated"].write_bytes(whole[:len(whole) // 2])
    paths["thin"] = tmp / "thin.png"
    Image.new("RGB", (4000, 10)).save(paths["thin"])  # 2048x5 after the keep-ratio resize (long side <= 2048)
    (tmp / "imagenet" / "n01440764").mkdir(parents=True)
    (tmp / "imagenet" / "n01440764" / "a.JPEG").write_bytes(jpeg_bytes(1))
    paths["readonly"].mkdir(mode=0o555)
    return paths


@dataclass
class Outcome:
    returncode: int
    stderr: str
    changed: list[str]  # prior files that were modified or removed


def run_case(case: Case, materials: dict[str, Path]) -> Outcome:
    out = materials["tmp"] / "out" / case.id
    for name, data in case.prior:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    argv = [part.format(out=out, **materials) for part in case.command]
    result = commands.run(argv, materials["tmp"] / "streams" / case.id)
    changed = []
    for name, data in case.prior:
        path = out / name
        now = path.read_bytes() if path.is_file() else None
        if now is None or (now[:len(data)] != data if name == "log.txt" else now != data):
            changed.append(name)
    return Outcome(result.returncode, result.stderr, changed)


@pytest.fixture(scope="module")
def outcomes(request, materials) -> dict[str, Outcome]:
    """Run the selected cases, three at a time."""
    selected = [item.callspec.params["case"] for item in request.session.items
                if item.module is request.module and getattr(item, "originalname", "") == "test_bad_input"]
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip([c.id for c in selected], pool.map(lambda c: run_case(c, materials), selected), strict=True))


def test_at_least_20_cases_over_every_command():
    assert len(CASES) >= 20 and len({c.id for c in CASES}) == len(CASES)
    assert {M, S, D} | {"convert_dataset/convert_imagenet.py", "tools/make_synthetic_data.py"} <= \
        {c.command[0] for c in CASES}


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, outcomes, materials):
    outcome = outcomes[case.id]
    lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    assert outcome.returncode == 2, outcome.stderr
    assert "Traceback" not in outcome.stderr and len(lines) == 1, outcome.stderr
    assert re.match(f"error: {case.message}", lines[0]), lines[0]
    assert not outcome.changed, f"damaged: {outcome.changed}"
    assert materials["afile"].read_text() == "a file, not a folder\n"
    assert not materials["marker"].exists(), "the crafted checkpoint's code ran"


@pytest.mark.slow
def test_debug_shows_the_traceback(materials):
    result = subprocess.run([sys.executable, "tools/make_synthetic_data.py", "--out", str(materials["afile"]),
                             "--debug"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback (most recent call last)" in result.stderr
    assert "UserError: cannot use" in result.stderr


COMMANDS = ["main_group_vit.py", "main_seg.py", "demo/demo_seg.py", "demo/app.py", "tools/quickstart.py",
            "tools/make_synthetic_data.py", "tools/convert_hf_checkpoint.py", *(
                f"convert_dataset/{name}.py" for name in ("convert_coco_object", "convert_imagenet", "convert_yfcc14m",
                                                          "create_subset", "process_redcaps", "rename_shards"))]


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_offers_debug(command):
    result = subprocess.run([sys.executable, command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    help_text = " ".join(result.stdout.split())  # argparse wraps the help lines
    assert "--debug" in help_text and "show tracebacks instead of one-line errors" in help_text


@pytest.mark.parametrize(("error", "line"), [
    (UserError("report:\n  section (2):\n    first\n    second"), "error: report: section (2): first; second"),
    (NotADirectoryError(20, "Not a directory", "out/log.txt"), "error: out/log.txt: Not a directory"),
    (PermissionError(13, "Permission denied", "out"), "error: out: Permission denied"),
])
def test_run_cli_prints_one_line(error, line, capsys):
    def main():
        raise error

    with pytest.raises(SystemExit) as info:
        run_cli(main, debug=False)
    assert info.value.code == 2 and capsys.readouterr().err == line + "\n"
    with pytest.raises(type(error)):
        run_cli(main, debug=True)


class BadLabels(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int):
        raise UserError("label map a.png holds 50, which is not a class of this dataset")


def test_an_error_in_a_loader_worker_is_one_line(capsys):
    """torch raises a worker's error again with the worker's traceback as its message: the line is its own."""
    def main():
        next(iter(torch.utils.data.DataLoader(BadLabels(), num_workers=1)))

    with pytest.raises(SystemExit) as info:
        run_cli(main, debug=False)
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: label map a.png holds 50, which is not a class of this dataset\n"


def test_unreadable_coco_label_map_is_named(tmp_path):
    """(Not in the table: that command also prints a count warning and a progress bar on stderr.)"""
    from convert_dataset.convert_coco_object import convert

    labels = tmp_path / "coco" / "annotations" / "val2017"
    labels.mkdir(parents=True)
    (labels / "000000000139.png").write_text("not a png")
    with pytest.raises(UserError, match=r"^cannot read .*000000000139\.png as a label map: cannot identify image"):
        convert(tmp_path / "coco", tmp_path / "coco")
