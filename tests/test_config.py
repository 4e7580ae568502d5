"""Tests for utils/config.py and the shipped configs (the reference's config system: ``_base_`` inheritance,
``get_config``)."""

from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ReadonlyConfigError

from utils.checkpoint import load_checkpoint
from utils.config import apply_opts, cfg_to_dict, get_config, load_config, parse_opts
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
YFCC = CONFIGS / "group_vit_gcc_yfcc_30e.yml"
REDCAP = CONFIGS / "group_vit_gcc_redcap_30e.yml"
GOLDEN = ROOT / "tests" / "golden"

MISSING = "???"
# Spec 2.3, in file order: every key of configs/default.yml and its default (unresolved).
EXPECTED_DEFAULTS: dict[str, object] = {
    "data.batch_size": 256,
    "data.pin_memory": True,
    "data.num_workers": 6,
    "data.shuffle_buffer": 10000,
    "data.seed": "${train.seed}",
    "data.max_bad_fraction": 0.5,
    "data.uint8_images": False,
    "data.dataset.meta.gcc3m.type": "img_txt_pair",
    "data.dataset.meta.gcc3m.path": "local_data/gcc3m_shards",
    "data.dataset.meta.gcc3m.prefix": "gcc-train-{000000..00436}.tar",
    "data.dataset.meta.gcc3m.length": 2891445,
    "data.dataset.meta.gcc12m.type": "img_txt_pair",
    "data.dataset.meta.gcc12m.path": "local_data/gcc12m_shards",
    "data.dataset.meta.gcc12m.prefix": "gcc-conceptual-12m-{000000..001943}.tar",
    "data.dataset.meta.gcc12m.length": 11156203,
    "data.dataset.meta.yfcc14m.type": "img_txt_pair",
    "data.dataset.meta.yfcc14m.path": "local_data/yfcc14m_shards",
    "data.dataset.meta.yfcc14m.prefix": "yfcc14m-{000000..001888}.tar",
    "data.dataset.meta.yfcc14m.length": 14615499,
    "data.dataset.meta.redcap12m.type": "img_txt_pair",
    "data.dataset.meta.redcap12m.path": "local_data/redcap12m_shards",
    "data.dataset.meta.redcap12m.prefix": "redcap12m-{000000..001211}.tar",
    "data.dataset.meta.redcap12m.length": 11866987,
    "data.dataset.meta.imagenet.type": "img_cls_pair",
    "data.dataset.meta.imagenet.path": "local_data/imagenet_shards",
    "data.dataset.meta.imagenet.prefix": "imagenet-val-{000000..000049}.tar",
    "data.dataset.meta.imagenet.length": 50000,
    "data.dataset.train": ["gcc3m", "gcc12m", "yfcc14m"],
    "data.dataset.val": ["imagenet"],
    "data.img_aug.deit_aug": True,
    "data.img_aug.img_size": 224,
    "data.img_aug.img_scale": [0.08, 1.0],
    "data.img_aug.interpolation": "bilinear",
    "data.img_aug.color_jitter": 0.4,
    "data.img_aug.auto_augment": "rand-m9-mstd0.5-inc1",
    "data.img_aug.re_prob": 0.25,
    "data.img_aug.re_mode": "pixel",
    "data.img_aug.re_count": 1,
    "data.text_aug.max_seq_len": 77,
    "data.text_aug.multi_label": 0,
    "data.text_aug.word_type": "noun",
    "data.text_aug.tagger": "auto",
    "train.start_epoch": 0,
    "train.epochs": 30,
    "train.warmup_epochs": 2,
    "train.base_lr": 0.0016,
    "train.weight_decay": 0.05,
    "train.warmup_lr": 4e-6,
    "train.min_lr": 4e-5,
    "train.clip_grad": 5.0,
    "train.max_nonfinite_steps": 10,
    "train.accumulation_steps": 0,
    "train.amp_opt_level": "O1",
    "train.amp": "auto",
    "train.text_length_multiple": 8,
    "train.compile": False,
    "train.cuda_graph": False,
    "train.seed": 0,
    "train.lr_scheduler.name": "cosine",
    "train.optimizer.name": "adamw",
    "train.optimizer.eps": 1e-8,
    "train.optimizer.betas": [0.9, 0.999],
    "evaluate.eval_only": False,
    "evaluate.eval_freq": 1,
    "evaluate.task": ["cls", "seg"],
    "evaluate.cls.save_best": True,
    "evaluate.cls.template": "subset",
    "evaluate.cls.classnames": None,
    "evaluate.seg.save_best": True,
    "evaluate.seg.cfg": "segmentation/configs/_base_/datasets/pascal_voc12.py",
    "evaluate.seg.template": "simple",
    "evaluate.seg.opts": [],
    "evaluate.seg.bg_thresh": None,
    "evaluate.seg.protocol": "groupvit",
    "evaluate.seg.short_side": None,
    "checkpoint.auto_resume": True,
    "checkpoint.resume": "",
    "checkpoint.freq": 1,
    "checkpoint.max_kept": -1,
    "checkpoint.save_freq": 1,
    "checkpoint.save_steps": 0,
    "model_name": "",
    "output": MISSING,
    "tag": "default",
    "print_freq": 10,
    "seed": 0,
    "wandb": False,
    "local_rank": MISSING,
    "vis": [],
}

# Spec section 3: the model section, identical in both experiment files (multi_label unresolved).
EXPECTED_MODEL = {
    "type": "MultiLabelContrastive",
    "img_encoder": {
        "type": "GroupViT",
        "embed_dim": 384,
        "num_heads": [6, 6, 6],
        "depths": [6, 3, 3],
        "num_group_tokens": [64, 8, 0],
        "num_output_groups": [64, 8],
        "drop_rate": 0.0,
        "drop_path_rate": 0.1,
    },
    "text_encoder": {"type": "TextTransformer", "context_length": 77, "width": 256, "layers": 12, "vocab_size": 49408},
    "contrast_temperature": 0.07,
    "proj_num_layers": 2,
    "output_dim": 256,
    "multi_label": "${data.text_aug.multi_label}",
}


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    """Dotted leaf keys of a plain nested dict (lists are leaves), in order."""
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def args(cfg: Path | str, **kwargs) -> argparse.Namespace:
    return argparse.Namespace(cfg=str(cfg), **kwargs)


def struct(cfg: DictConfig) -> DictConfig:
    OmegaConf.set_struct(cfg, True)
    return cfg


@pytest.fixture(autouse=True)
def _no_dist_env(monkeypatch):
    for name in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def yfcc() -> DictConfig:
    return struct(load_config(YFCC))


# ----------------------------------------------------------------------------------------- _base_ merging


def test_string_base_relative_to_child_dir(tmp_path, monkeypatch):
    write(tmp_path / "configs" / "base.yml", "a: 1\nb: {x: 1, y: 2}\nl: [1, 2, 3]\n")
    write(tmp_path / "configs" / "child.yml", "_base_: base.yml\nb: {y: 20}\nl: [9]\nc: 3\n")
    monkeypatch.chdir(tmp_path)  # the base is found next to the child, not in the cwd
    cfg = load_config("configs/child.yml")
    assert cfg_to_dict(cfg) == {"a": 1, "b": {"x": 1, "y": 20}, "l": [9], "_base_": "base.yml", "c": 3}
    assert list(cfg.keys()) == ["a", "b", "l", "_base_", "c"]  # base keys, then _base_, then new keys


def test_list_base_later_wins_child_wins(tmp_path):
    write(tmp_path / "one.yml", "a: 1\nb: 1\nl: [1, 1]\n")
    write(tmp_path / "sub" / "two.yml", "b: 2\nc: 2\nl: [2]\n")
    child = write(tmp_path / "child.yml", "_base_: [one.yml, sub/two.yml]\nc: 3\n")
    cfg = load_config(child)
    assert cfg_to_dict(cfg) == {"a": 1, "b": 2, "l": [2], "c": 3, "_base_": ["one.yml", "sub/two.yml"]}


def test_nested_bases_resolve_against_their_own_dir(tmp_path):
    write(tmp_path / "root.yml", "a: root\nb: root\nc: root\nl: [1, 2]\n")
    write(tmp_path / "mid" / "mid.yml", "_base_: ../root.yml\nb: mid\nl: [3]\n")
    child = write(tmp_path / "exp" / "child.yml", "_base_: ../mid/mid.yml\nc: child\n")
    cfg = load_config(child)
    assert (cfg.a, cfg.b, cfg.c, list(cfg.l)) == ("root", "mid", "child", [3])
    assert cfg._base_ == "../mid/mid.yml"  # the child's own _base_ wins


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="config file not found") as info:
        load_config(tmp_path / "nope.yml")
    assert "nope.yml" in str(info.value) and "\n" not in str(info.value)


def test_missing_base_file_names_referrer(tmp_path):
    child = write(tmp_path / "child.yml", "_base_: gone.yml\na: 1\n")
    with pytest.raises(UserError) as info:
        load_config(child)
    message = str(info.value)
    assert "gone.yml" in message and "child.yml" in message and "\n" not in message


def test_base_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yml", "_base_: b.yml\n")
    write(tmp_path / "b.yml", "_base_: a.yml\n")
    with pytest.raises(UserError, match="cycle"):
        load_config(tmp_path / "a.yml")


def test_bad_yaml_is_a_one_line_error(tmp_path):
    bad = write(tmp_path / "bad.yml", "a: [1, 2\nb: 3\n")
    with pytest.raises(UserError) as info:
        load_config(bad)
    assert "bad.yml" in str(info.value) and "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------- shipped configs


def test_default_yml_has_every_key_of_spec_in_order():
    cfg = load_config(CONFIGS / "default.yml")
    flat = flatten(cfg_to_dict(cfg, resolve=False))
    assert list(flat) == list(EXPECTED_DEFAULTS)
    assert flat == EXPECTED_DEFAULTS
    assert OmegaConf.is_missing(cfg, "output") and OmegaConf.is_missing(cfg, "local_rank")
    assert cfg.data.seed == 0
    assert isinstance(cfg.train.base_lr, float) and isinstance(cfg.train.optimizer.eps, float)


def test_yfcc_config():
    cfg = load_config(YFCC)
    assert cfg._base_ == "default.yml"
    assert list(cfg.keys())[-2:] == ["_base_", "model"]
    assert cfg_to_dict(cfg.model, resolve=False) == EXPECTED_MODEL
    assert cfg.data.text_aug.multi_label == 3 and cfg.model.multi_label == 3
    assert list(cfg.data.dataset.train) == ["gcc3m", "gcc12m", "yfcc14m"]
    expected = {**EXPECTED_DEFAULTS, "data.text_aug.multi_label": 3}
    assert {k: v for k, v in flatten(cfg_to_dict(cfg, resolve=False)).items() if k in expected} == expected


def test_redcap_config():
    cfg = load_config(REDCAP)
    assert cfg._base_ == "default.yml"
    assert cfg_to_dict(cfg.model, resolve=False) == EXPECTED_MODEL
    assert cfg.data.text_aug.multi_label == 0 and cfg.model.multi_label == 0
    assert list(cfg.data.dataset.train) == ["gcc3m", "gcc12m", "redcap12m"]
    expected = {**EXPECTED_DEFAULTS, "data.dataset.train": ["gcc3m", "gcc12m", "redcap12m"]}
    assert {k: v for k, v in flatten(cfg_to_dict(cfg, resolve=False)).items() if k in expected} == expected


def test_matches_config_pickled_in_official_checkpoint(tmp_path, monkeypatch):
    """The golden checkpoint holds the reference's get_config result for tiny_model.yml over default.yml."""
    official = load_checkpoint(str(GOLDEN / "tiny_official_ckpt.pth"))["config"]
    shutil.copy(CONFIGS / "default.yml", tmp_path / "default.yml")
    write(tmp_path / "tiny_model.yml", "_base_: default.yml\n" + (GOLDEN / "tiny_model.yml").read_text())
    monkeypatch.setenv("WORLD_SIZE", "16")
    cfg = get_config(args(tmp_path / "tiny_model.yml", local_rank=0))
    mine, theirs = cfg_to_dict(cfg, resolve=False), cfg_to_dict(official, resolve=False)
    ours_only = {"data.text_aug.tagger", "data.max_bad_fraction", "train.amp", "train.max_nonfinite_steps",
                 "evaluate.cls.classnames", "data.uint8_images", "train.text_length_multiple", "train.compile",
                 "train.cuda_graph", "evaluate.seg.protocol", "evaluate.seg.short_side", "evaluate.seg.bg_thresh",
                 "model.img_encoder.assign_init_scale",
                 "checkpoint.save_steps"}  # keys this project added
    assert [kv for kv in flatten(mine).items() if kv[0] not in ours_only] == list(flatten(theirs).items())


# ----------------------------------------------------------------------------------------- interpolation / opts


def test_data_seed_follows_train_seed(yfcc):
    apply_opts(yfcc, ["train.seed=7"])
    assert yfcc.data.seed == 7 and cfg_to_dict(yfcc)["data"]["seed"] == 7


def test_multi_label_override_changes_model(yfcc):
    apply_opts(yfcc, ["data.text_aug.multi_label=0"])
    assert yfcc.model.multi_label == 0
    assert cfg_to_dict(yfcc.model)["multi_label"] == 0


def test_struct_mode_after_load(yfcc):
    with pytest.raises(ConfigAttributeError):
        yfcc.train.base_lrr = 1.0
    with pytest.raises(ConfigKeyError):
        yfcc.merge_with({"new_top_level": 1})


@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        (["a.b=1", "c=x"], ["a.b=1", "c=x"]),
        (
            ["evaluate.seg.cfg", "segmentation/configs/_base_/datasets/pascal_context.py"],
            ["evaluate.seg.cfg=segmentation/configs/_base_/datasets/pascal_context.py"],
        ),
        (["a", "1", "b=2", "c", "[x, y]"], ["a=1", "b=2", "c=[x, y]"]),
        (["evaluate.seg.opts", "[test_cfg.mode=whole]"], ["evaluate.seg.opts=[test_cfg.mode=whole]"]),
        (["k=v=w"], ["k=v=w"]),
        ([], []),
        (None, []),
    ],
)
def test_parse_opts_forms(opts, expected):
    assert parse_opts(opts) == expected


@pytest.mark.parametrize("opts", [["train.epochs"], ["train.epochs", "train.seed=1"], ["=3"]])
def test_parse_opts_dangling_key(opts):
    with pytest.raises(UserError) as info:
        parse_opts(opts)
    assert "\n" not in str(info.value)


def test_apply_opts_both_forms_and_mixed(yfcc):
    apply_opts(yfcc, ["evaluate.seg.cfg", "segmentation/configs/_base_/datasets/pascal_context.py"])
    assert yfcc.evaluate.seg.cfg == "segmentation/configs/_base_/datasets/pascal_context.py"
    apply_opts(yfcc, ["train.epochs=3", "data.dataset.train", "[gcc3m]", "train.base_lr", "1e-3", "tag=x"])
    assert yfcc.train.epochs == 3 and list(yfcc.data.dataset.train) == ["gcc3m"]
    assert yfcc.train.base_lr == pytest.approx(1e-3) and yfcc.tag == "x"
    apply_opts(yfcc, ["evaluate.seg.opts=[test_cfg.mode=whole]", "output=out/dir", "wandb=true"])
    assert list(yfcc.evaluate.seg.opts) == ["test_cfg.mode=whole"] and yfcc.output == "out/dir" and yfcc.wandb is True


def test_apply_opts_merges_mappings(yfcc):
    apply_opts(yfcc, ["train.optimizer={eps: 1e-6}"])
    assert yfcc.train.optimizer.eps == pytest.approx(1e-6) and yfcc.train.optimizer.name == "adamw"


def test_unknown_key_one_line_with_suggestions(yfcc):
    with pytest.raises(UserError) as info:
        apply_opts(yfcc, ["train.base_lrr=1"])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("unknown config key 'train.base_lrr' (did you mean: train.base_lr")
    assert "train.warmup_lr" in message


@pytest.mark.parametrize(
    ("opts", "key"),
    [
        (["train.base_lr.x=1"], "train.base_lr.x"),  # below a scalar
        (["train={base_lrr: 1}"], "train.base_lrr"),  # inside a mapping value
        (["segmentation/configs/x.py=1"], "segmentation/configs/x.py"),
    ],
)
def test_unknown_key_variants(yfcc, opts, key):
    with pytest.raises(UserError, match=f"unknown config key '{key}'") as info:
        apply_opts(yfcc, opts)
    assert "\n" not in str(info.value)


def test_readme_space_form_no_longer_fails(yfcc):
    """The README's `--opts evaluate.seg.cfg segmentation/...` fails in the reference; here it works."""
    apply_opts(yfcc, "evaluate.seg.cfg segmentation/configs/_base_/datasets/coco.py".split())
    assert yfcc.evaluate.seg.cfg == "segmentation/configs/_base_/datasets/coco.py"


@pytest.mark.parametrize(
    "opts",
    [["train=5"], ["data.dataset.train=gcc3m"], ["seed=[1, 2]"], ["data.dataset.train.0=x"], ["train.seed={a: 1}"]],
)
def test_wrong_container_kind(yfcc, opts):
    with pytest.raises(UserError) as info:
        apply_opts(yfcc, opts)
    assert "\n" not in str(info.value) and opts[0].split("=")[0].rsplit(".", 1)[0] in str(info.value)


@dataclass
class _Typed:
    epochs: int = 30
    name: str = "x"


def test_wrong_type_for_typed_node():
    cfg = OmegaConf.create({"train": OmegaConf.structured(_Typed)})
    with pytest.raises(UserError) as info:
        apply_opts(cfg, ["train.epochs=abc"])
    message = str(info.value)
    assert "\n" not in message and "train.epochs" in message and "abc" in message
    apply_opts(cfg, ["train.epochs=5"])
    assert cfg.train.epochs == 5


@pytest.mark.parametrize(("item", "expected"), [
    ("train.epochs=abc", "a number"),
    ("data.batch_size=two", "a number"),
    ("wandb=3", "true or false"),
    ("train.epochs=[1,2]", "a single value"),
    ("data.dataset.train=gcc3m", "a list"),
])
def test_wrong_type_for_plain_yaml_keys(yfcc, item, expected):
    with pytest.raises(UserError, match=rf"wrong type for config key '{item.split('=')[0]}': expected {expected}"):
        apply_opts(yfcc, [item])


def test_values_of_the_right_kind_are_accepted(yfcc):
    apply_opts(yfcc, ["train.base_lr=1", "data.pin_memory=false", "model_name=run", "evaluate.cls.classnames=[a,b]"])
    assert yfcc.train.base_lr == 1 and yfcc.data.pin_memory is False
    assert list(yfcc.evaluate.cls.classnames) == ["a", "b"]


# ----------------------------------------------------------------------------------------- get_config


def test_get_config_naming_and_readonly(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "16")
    cfg = get_config(args(YFCC))
    assert cfg.model_name == "group_vit_gcc_yfcc_30e_bs256x16"
    assert cfg.output == "output/group_vit_gcc_yfcc_30e_bs256x16" and cfg.tag == "default"
    assert cfg.local_rank == 0 and cfg.wandb is False and list(cfg.vis) == []
    assert OmegaConf.is_readonly(cfg) and OmegaConf.is_struct(cfg)
    with pytest.raises(ReadonlyConfigError):
        cfg.train.epochs = 1
    with pytest.raises(ReadonlyConfigError):
        cfg.data.dataset.train.append("x")


def test_get_config_world_size_default_and_batch_shortcut():
    cfg = get_config(args(REDCAP, batch_size=32))
    assert cfg.data.batch_size == 32 and cfg.model_name == "group_vit_gcc_redcap_30e_bs32x1"


def test_get_config_model_name_from_config(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = get_config(args(YFCC, opts=["model_name=mine"]))
    assert cfg.model_name == "mine_bs256x2" and cfg.output == "output/mine_bs256x2"


def test_get_config_output_and_tag():
    cfg = get_config(args(YFCC, output="runs/a", tag="t1"))
    assert cfg.output == "runs/a/t1" and cfg.tag == "t1"
    cfg = get_config(args(YFCC, output=None, tag="t2"))
    assert cfg.output == "output/group_vit_gcc_yfcc_30e_bs256x1/t2"
    cfg = get_config(args(YFCC, output="runs/b", tag=None))
    assert cfg.output == "runs/b" and cfg.tag == "default"


def test_shortcuts_only_when_given():
    given = get_config(
        args(YFCC, batch_size=8, amp_opt_level="O0", resume="ck.pth", eval=True, keep=3, wandb=True, vis=["pred"])
    )
    assert given.data.batch_size == 8 and given.train.amp_opt_level == "O0"
    assert given.checkpoint.resume == "ck.pth" and given.evaluate.eval_only is True
    assert given.checkpoint.max_kept == 3 and given.wandb is True and list(given.vis) == ["pred"]

    unset = get_config(
        args(YFCC, batch_size=None, amp_opt_level=None, resume=None, eval=False, keep=None, wandb=False, vis=None)
    )
    assert unset.data.batch_size == 256 and unset.train.amp_opt_level == "O1"
    assert unset.checkpoint.resume == "" and unset.evaluate.eval_only is False and unset.checkpoint.max_kept == -1
    assert unset.wandb is False and list(unset.vis) == []


def test_amp_opt_level_from_opts_not_overwritten():
    cfg = get_config(args(YFCC, opts=["train.amp_opt_level=O0"], amp_opt_level=None))
    assert cfg.train.amp_opt_level == "O0"
    cfg = get_config(args(YFCC, opts=["train.amp_opt_level=O0"], amp_opt_level="O2"))
    assert cfg.train.amp_opt_level == "O2"  # shortcuts come after --opts, as in the reference


def test_get_config_opts_errors_are_user_errors():
    with pytest.raises(UserError, match="unknown config key 'train.base_lrr'"):
        get_config(args(YFCC, opts=["train.base_lrr", "1"]))
    with pytest.raises(UserError, match="config file not found"):
        get_config(args(CONFIGS / "missing.yml"))


def test_local_rank_sources(monkeypatch):
    assert get_config(args(YFCC, local_rank=3)).local_rank == 3
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert get_config(args(YFCC)).local_rank == 2
    assert get_config(args(YFCC, local_rank=None)).local_rank == 2
    assert get_config(args(YFCC, local_rank=1)).local_rank == 1


def test_get_config_keeps_base_key_and_resolves():
    cfg = get_config(args(YFCC))
    assert cfg._base_ == "default.yml"
    plain = cfg_to_dict(cfg)
    assert plain["model"]["multi_label"] == 3 and plain["data"]["seed"] == 0
    assert cfg_to_dict(cfg, resolve=False)["model"]["multi_label"] == "${data.text_aug.multi_label}"
