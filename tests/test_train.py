"""main_group_vit.py end to end on generated shards: train, auto-resume, --eval, errors; the throughput benchmark."""

import io
import math
import re
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import pytest
import torch
import torchvision.transforms.functional as TF
from helpers_train_data import VAL_CLASSNAMES, write_tiny_setup
from PIL import Image

import main_group_vit
from datasets import template_meta, tokenize
from training import loop
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
GOLDEN_CKPT = ROOT / "tests" / "golden" / "tiny_official_ckpt.pth"
TRAIN_LINE = re.compile(r"Train: \[(\d+)/\d+\]\[(\d+)/(\d+)\].*? lr (\S+) ")


def spec_lr(t, base, warmup_lr, min_lr, warmup_t, t_initial):
    if t < warmup_t:
        return warmup_lr + t * (base - warmup_lr) / warmup_t
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * t / t_initial))


def fake_segmentation(monkeypatch, evaluate_seg):
    """Stand-in for segmentation.evaluation (None: the import fails)."""
    module = None
    if evaluate_seg is not None:
        module = types.ModuleType("segmentation.evaluation")
        module.evaluate_seg = evaluate_seg
    monkeypatch.setitem(sys.modules, "segmentation.evaluation", module)


def missing_voc(cfg, model, logger=None):
    raise UserError("segmentation dataset not found: local_data/VOCdevkit")


@pytest.mark.slow
def test_train_checkpoint_then_auto_resume(tmp_path, monkeypatch):
    """Run 1 stops after epoch 0 of 2; run 2 auto-resumes at epoch 1 with the optimizer/scheduler state."""
    cfg = write_tiny_setup(tmp_path, epochs=2)
    out = tmp_path / "out"
    argv = ["--cfg", str(cfg), "--output", str(out)]
    real_epoch = loop.train_one_epoch

    def stop_at_epoch_1(state, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(state, epoch)

    fake_segmentation(monkeypatch, None)  # the evaluator is not importable: reported, skipped
    monkeypatch.setattr(loop, "train_one_epoch", stop_at_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        main_group_vit.main(argv)
    assert {p.name for p in out.glob("*.pth")} == {"ckpt_epoch_0.pth", "checkpoint.pth", "ckpt_epoch_0_best_acc1.pth"}
    first = torch.load(out / "checkpoint.pth", weights_only=True)  # plain containers only
    assert first["epoch"] == 0 and first["config"]["model"]["img_encoder"]["embed_dim"] == 96
    assert set(first) >= {"model", "optimizer", "lr_scheduler", "metrics", "max_accuracy", "max_miou"}
    log = (out / "log.txt").read_text()
    assert "zero-shot segmentation skipped: the evaluator is not available" in log

    monkeypatch.setattr(loop, "train_one_epoch", real_epoch)
    fake_segmentation(monkeypatch, missing_voc)
    metrics = main_group_vit.main(argv)
    log = (out / "log.txt").read_text()
    assert f"resumed from {out / 'checkpoint.pth'} (epoch 0" in log
    assert "zero-shot segmentation skipped: segmentation dataset not found" in log
    assert {p.name for p in out.glob("*.pth")} >= {"ckpt_epoch_0.pth", "ckpt_epoch_1.pth", "checkpoint.pth"}
    assert (out / "config.yml").is_file() and list((out / "tensorboard").glob("events.out.tfevents.*"))

    last = torch.load(out / "checkpoint.pth", weights_only=True)
    assert last["epoch"] == 1 and metrics["max_accuracy"] == last["max_accuracy"] >= first["max_accuracy"]
    steps = {float(s["step"]) for s in last["optimizer"]["state"].values()}
    assert steps == {4.0}  # 2 epochs x 2 iterations: the optimizer state was carried over, not restarted
    assert last["lr_scheduler"]["t_initial"] == 4 and last["lr_scheduler"]["warmup_t"] == 2

    # the learning rate of every iteration (both runs) is the spec's formula at the scaled rates
    scale = 2 / 4096  # batch 2 x 1 process
    base, warmup_lr, min_lr = 1.6e-3 * scale, 4e-6 * scale, 4e-5 * scale
    seen = {}
    for epoch, idx, num, lr in TRAIN_LINE.findall(log):
        seen[int(epoch) * int(num) + int(idx)] = float(lr)
    assert sorted(seen) == [0, 1, 2, 3]
    for k, lr in seen.items():
        assert lr == pytest.approx(spec_lr(max(k - 1, 0), base, warmup_lr, min_lr, 2, 4), rel=1e-4), k
    final_lr = last["optimizer"]["param_groups"][0]["lr"]
    assert final_lr == pytest.approx(spec_lr(3, base, warmup_lr, min_lr, 2, 4), rel=1e-12)

    # a third run has nothing left to do and keeps the files
    assert main_group_vit.main(argv)["max_accuracy"] == metrics["max_accuracy"]


@pytest.mark.slow
def test_keep_prunes_epoch_checkpoints(tmp_path):
    cfg = write_tiny_setup(tmp_path, epochs=3, train_length=2, extra={"evaluate.task": []})
    out = tmp_path / "out"
    main_group_vit.main(["--cfg", str(cfg), "--output", str(out), "--keep", "1"])
    assert sorted(p.name for p in out.glob("*.pth")) == ["checkpoint.pth", "ckpt_epoch_2.pth"]


def independent_zero_shot(model, val_dir: Path, classnames):
    """Top-1/top-5 hits computed without the project's data pipeline or validation code."""
    with torch.no_grad():
        prompts = [t.format(c) for c in classnames for t in template_meta["subset"]]
        text = model.encode_text(tokenize(prompts)).view(len(classnames), len(template_meta["subset"]), -1)
        class_emb = torch.nn.functional.normalize(text.mean(dim=1), dim=-1)
        top1 = top5 = total = 0
        for shard in sorted(val_dir.glob("*.tar")):
            with tarfile.open(shard) as tar:
                files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
            for key in sorted({name.split(".")[0] for name in files}):
                image = Image.open(io.BytesIO(files[f"{key}.jpg"])).convert("RGB")
                image = TF.center_crop(TF.resize(image, 256, TF.InterpolationMode.BILINEAR), 224)
                x = TF.normalize(TF.to_tensor(image), [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
                image_x = torch.nn.functional.normalize(model.encode_image(x[None]), dim=-1)
                ranking = (image_x @ class_emb.t())[0].argsort(descending=True).tolist()
                label = int(files[f"{key}.cls"])
                top1 += ranking[0] == label
                top5 += label in ranking[:5]
                total += 1
    return 100 * top1 / total, 100 * top5 / total, total


@pytest.mark.slow
def test_eval_accuracy_equals_independent_computation(tmp_path, tiny_model):
    cfg = write_tiny_setup(tmp_path)
    for shard in (tmp_path / "pairs").glob("*.tar"):
        shard.unlink()  # --eval needs no training shard
    metrics = main_group_vit.main(["--cfg", str(cfg), "--eval", "--resume", str(GOLDEN_CKPT),
                                   "--output", str(tmp_path / "out")])
    acc1, acc5, total = independent_zero_shot(tiny_model, tmp_path / "val", VAL_CLASSNAMES)
    assert metrics["num_images"] == total == 10
    assert metrics["acc1"] == pytest.approx(acc1) and metrics["acc5"] == pytest.approx(acc5)
    log = (tmp_path / "out" / "log.txt").read_text()
    assert f"on the 10 test images: top-1 {acc1:.2f}%  top-5 {acc5:.2f}%" in log


def test_eval_needs_weights(tmp_path):
    cfg = write_tiny_setup(tmp_path)
    with pytest.raises(UserError, match="--eval needs weights"):
        main_group_vit.main(["--cfg", str(cfg), "--eval", "--output", str(tmp_path / "out")])


@pytest.mark.slow
def test_cli_missing_shard_is_one_line_exit_2(tmp_path):
    cfg = write_tiny_setup(tmp_path)
    result = subprocess.run(
        [sys.executable, "main_group_vit.py", "--cfg", str(cfg), "--output", str(tmp_path / "out"),
         "--opts", "data.dataset.meta.tiny_pairs.prefix=pairs-{000000..000009}.tar"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: dataset 'tiny_pairs': 6 of 10 shards do not exist, e.g. {tmp_path / 'pairs' / 'pairs-000004.tar'} "
        "(data.dataset.meta.tiny_pairs.path / prefix)"]


@pytest.mark.parametrize("flag", ["--local_rank", "--local-rank"])
def test_local_rank_flag_accepted(flag):
    args = main_group_vit.parse_args(["--cfg", "x.yml", flag, "3"])
    assert args.local_rank == 3 and args.amp_opt_level is None and args.batch_size is None and args.keep is None


def test_benchmark_prints_a_table(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import train_throughput
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rows = train_throughput.main(["--cfg", str(write_tiny_setup(tmp_path)), "--device", "cpu", "--precision", "fp32",
                                  "bf16", "--batch-size", "2", "--iters", "1", "--warmup", "0"])
    assert [row[0] for row in rows] == ["fp32", "bf16"] and all(row[1] > 0 for row in rows)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["precision", "images/s", "s/step", "peak", "memory", "(MiB)"]
    assert lines[2].split()[0] == "fp32" and lines[3].split()[0] == "bf16"


def test_classnames_from_config(tmp_path):
    from omegaconf import OmegaConf

    from datasets import imagenet_classes
    from training.zero_shot_cls import load_classnames

    assert load_classnames(OmegaConf.create({"classnames": None})) == list(imagenet_classes)
    assert load_classnames(OmegaConf.create({"classnames": ["dog", "cat"]})) == ["dog", "cat"]
    names = tmp_path / "names.txt"
    names.write_text("dog\n  hot dog \n\ncat\n")
    assert load_classnames(OmegaConf.create({"classnames": str(names)})) == ["dog", "hot dog", "cat"]
    with pytest.raises(UserError, match="file not found"):
        load_classnames(OmegaConf.create({"classnames": str(tmp_path / "absent.txt")}))


def test_auto_resume_helper(tmp_path):
    import os

    from utils.checkpoint import auto_resume_helper

    assert auto_resume_helper(tmp_path / "absent") is None and auto_resume_helper(tmp_path) is None
    for i, name in enumerate(["ckpt_epoch_1.pth", "ckpt_epoch_0.pth", "notes.txt"]):
        (tmp_path / name).write_bytes(b"x")
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    assert auto_resume_helper(tmp_path) == str(tmp_path / "ckpt_epoch_0.pth")  # the newest .pth by mtime
    (tmp_path / "checkpoint.pth").write_bytes(b"x")
    os.utime(tmp_path / "checkpoint.pth", (10, 10))
    assert auto_resume_helper(tmp_path) == str(tmp_path / "checkpoint.pth")  # always preferred


def test_saved_config_reruns_with_the_same_lr_in_the_same_folder(tmp_path, monkeypatch):
    """Run 1 (default output folder) stops after epoch 0 of 2; its checkpoint's config is given the reference's
    scaled rates; run 2 with ``--cfg <run>/config.yml`` resumes in the same folder at the once-scaled rates."""
    cfg = write_tiny_setup(tmp_path, epochs=2, train_length=2, extra={
        "evaluate.task": [], "data.img_aug.img_size": 64, "model.img_encoder.img_size": 64})
    monkeypatch.chdir(tmp_path)
    real_epoch = loop.train_one_epoch

    def stop_at_epoch_1(state, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(state, epoch)

    monkeypatch.setattr(loop, "train_one_epoch", stop_at_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        main_group_vit.main(["--cfg", str(cfg)])
    out = tmp_path / "output" / "tiny_train_bs2x1"
    saved = (out / "config.yml").read_text()
    assert "base_lr: 0.0016\n" in saved and "model_name: tiny_train_bs2x1\n" in saved  # the rate as written
    ckpt = torch.load(out / "checkpoint.pth", weights_only=True)
    scale = 2 / 4096
    for key in ("base_lr", "warmup_lr", "min_lr"):  # as the reference stores its run configs
        ckpt["config"]["train"][key] *= scale
    torch.save(ckpt, out / "checkpoint.pth")

    monkeypatch.setattr(loop, "train_one_epoch", real_epoch)
    main_group_vit.main(["--cfg", str(out / "config.yml")])
    assert [p.name for p in (tmp_path / "output").iterdir()] == ["tiny_train_bs2x1"]
    log = (out / "log.txt").read_text()
    assert log.count("training tiny_train_bs2x1 on") == 2 and "resumed from" in log
    rates = re.findall(r"iterations per epoch; lr (\S+) \(warmup (\S+), min (\S+);", log)
    assert len(rates) == 2 and rates[0] == rates[1]
    assert [float(r) for r in rates[0]] == pytest.approx([1.6e-3 * scale, 4e-6 * scale, 4e-5 * scale], rel=1e-2)
    lrs = [float(lr) for *_, lr in TRAIN_LINE.findall(log)]
    expected = [spec_lr(0, 1.6e-3 * scale, 4e-6 * scale, 4e-5 * scale, 1, 2)] * 2  # steps 0 and 1 run with lr(0)
    assert lrs == pytest.approx(expected, rel=1e-4)
