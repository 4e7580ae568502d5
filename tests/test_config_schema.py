"""The config schema (utils/config_schema.py): each key declared once (default, type and range), configs/default.yml
written from it, and every value checked against its declared type and range where it is read (its YAML file, a _base_
file, --opts, a CLI shortcut, the finished config), in one line naming key and source."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from training import evaluate, train
from utils.config import all_keys, get_config, load_config
from utils.config_schema import SCHEMA, default_config_text
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
YFCC = ROOT / "configs" / "group_vit_gcc_yfcc_30e.yml"


def args(cfg: Path, opts=None, output="out", **kw) -> argparse.Namespace:
    return argparse.Namespace(cfg=str(cfg), opts=opts, output=output, **kw)


def test_default_yml_is_written_from_the_key_table():
    """A key is added to utils/config_schema.py's KEYS; tools/write_default_config.py writes configs/default.yml."""
    assert (ROOT / "configs" / "default.yml").read_text() == default_config_text()


def test_every_released_key_has_a_rule():
    """A key a released config sets must be declared with its type and range."""
    for path in sorted((ROOT / "configs").glob("*.yml")):
        cfg = load_config(path)
        leaves = [k for k in all_keys(cfg) if not k.startswith(("data.dataset.meta.", "_base_"))
                  and not OmegaConf.is_dict(OmegaConf.select(cfg, k, throw_on_resolution_failure=False))]
        assert not [k for k in leaves if k not in SCHEMA], path


def test_the_released_configs_pass():
    for path in sorted((ROOT / "configs").glob("*.yml")):
        get_config(args(path))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("train:\n  epochs: abc\n", r"'train\.epochs' in .*/exp\.yml: expected a whole number >= 0, got 'abc'"),
    ("train:\n  epochs: 2.5\n", r"'train\.epochs' in .*/exp\.yml: expected a whole number >= 0, got 2\.5"),
    ("train:\n  base_lr: 0\n", r"'train\.base_lr' in .*/exp\.yml: expected a number > 0, got 0"),
    ("train:\n  base_lr: .nan\n", r"'train\.base_lr' in .*/exp\.yml: expected a number > 0, got nan"),
    ("data:\n  batch_size: -4\n", r"'data\.batch_size' in .*/exp\.yml: expected a whole number >= 1, got -4"),
    ("data:\n  pin_memory: 'yes'\n", r"'data\.pin_memory' in .*/exp\.yml: expected true or false, got 'yes'"),
    ("data:\n  img_aug:\n    img_scale: [0.5]\n",
     r"'data\.img_aug\.img_scale' in .*/exp\.yml: expected a list of 2 values, each a number > 0 and <= 1, got"),
    ("evaluate:\n  task: [cls, depth]\n",
     r"'evaluate\.task' in .*/exp\.yml: expected a list of any number of values, each one of cls, seg"),
])
def test_a_bad_value_in_the_file_names_key_and_file(tmp_path, yaml_text, message):
    cfg = write(tmp_path, "exp.yml", f"_base_: {YFCC}\n{yaml_text}")
    with pytest.raises(UserError, match=f"^bad value for config key {message}"):
        get_config(args(cfg))


def test_a_bad_value_in_a_base_file_names_that_file(tmp_path):
    write(tmp_path, "base.yml", f"_base_: {YFCC}\ndata:\n  shuffle_buffer: -1\n")
    cfg = write(tmp_path, "exp.yml", "_base_: base.yml\ntrain:\n  epochs: 1\n")
    with pytest.raises(UserError, match=r"^bad value for config key 'data\.shuffle_buffer' in .*/base\.yml: "):
        get_config(args(cfg))


@pytest.mark.parametrize(("opts", "message"), [
    (["data.num_workers=-2"], r"'data\.num_workers' in --opts item 'data\.num_workers=-2': expected a whole number "
                              r">= -1, got -2"),
    (["train.amp=fp8"], r"'train\.amp' in --opts item 'train\.amp=fp8': expected one of auto, fp32, fp16, bf16"),
    (["train={epochs: -1}"], r"'train\.epochs' in --opts item 'train=\{epochs: -1\}': expected a whole number >= 0"),
    (["data.text_aug.tagger", "spacy"], r"'data\.text_aug\.tagger' in --opts item 'data\.text_aug\.tagger=spacy'"),
])
def test_a_bad_override_names_the_opts_item(opts, message):
    with pytest.raises(UserError, match=f"^bad value for config key {message}"):
        get_config(args(YFCC, opts=opts))


@pytest.mark.parametrize("size", [0, -8])
def test_bad_shortcuts_name_the_flag(size):
    with pytest.raises(UserError, match=f"^bad value for config key 'data.batch_size' in --batch-size: expected a "
                                        f"whole number >= 1, got {size}$"):
        get_config(args(YFCC, batch_size=size))
    with pytest.raises(UserError, match="'checkpoint.max_kept' in --keep: expected a whole number >= -1, got -2"):
        get_config(args(YFCC, keep=-2))


def test_resolved_values_and_cross_key_rules(tmp_path):
    """An interpolation is checked once resolved; an image size below one patch is refused wherever it is set."""
    with pytest.raises(UserError, match=r"^bad value for config key 'data\.seed' in the config of .*: expected a whole "
                                        r"number, got 'default'"):
        get_config(args(YFCC, opts=["data.seed=${tag}"]))
    with pytest.raises(UserError, match=r"'data\.img_aug\.img_size' in the config of .*: 8 is smaller than one patch "
                                        r"\(model\.img_encoder\.patch_size=16\)"):
        get_config(args(YFCC, opts=["data.img_aug.img_size=8"]))
    cfg = write(tmp_path, "exp.yml", f"_base_: {YFCC}\nmodel:\n  img_encoder:\n    patch_size: 32\n    img_size: 24\n")
    with pytest.raises(UserError, match=r"'model\.img_encoder\.img_size' in the config of .*/exp\.yml: 24 is smaller"):
        get_config(args(cfg, opts=["data.img_aug.img_size=32"]))


@pytest.mark.parametrize(("key", "value", "rule"), [
    ("train.max_nonfinite_steps", -1, "a whole number >= 0"),
    ("train.accumulation_steps", 2.5, "a whole number >= 0"),
    ("checkpoint.save_steps", -3, "a whole number >= 0"),
    ("data.num_workers", -2, "a whole number >= -1"),
    ("data.max_bad_fraction", 1.5, "a number >= 0 and <= 1"),
    ("train.amp", "half", "one of auto, fp32, fp16, bf16"),
    ("train.optimizer.name", "sgd", "one of adamw"),
])
@pytest.mark.parametrize("verb", [train, evaluate])
def test_the_engine_checks_a_config_not_built_by_get_config(tmp_path, verb, key, value, rule):
    """train(cfg) and evaluate(cfg) refuse, by the schema's rule, a bad value set after get_config, before they touch
    the output folder."""
    cfg = get_config(args(YFCC, output=str(tmp_path / "run")))
    OmegaConf.set_readonly(cfg, False)
    OmegaConf.update(cfg, key, value)
    with pytest.raises(UserError, match=f"^bad value for config key '{key}' in the run config: expected {rule}, got "):
        verb(cfg, device=torch.device("cpu"))
    assert not (tmp_path / "run").exists()


def test_empty_and_partial_config_files(tmp_path):
    with pytest.raises(UserError, match=r"^config .*/empty\.yml is empty"):
        get_config(args(write(tmp_path, "empty.yml", "# nothing here\n")))
    with pytest.raises(UserError, match=r"^.*/model\.yml is not an experiment config: it lacks data\.batch_size, "
                                        r"model_name, checkpoint, evaluate"):
        get_config(args(write(tmp_path, "model.yml", "model:\n  type: MultiLabelContrastive\n")))
