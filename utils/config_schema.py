"""The types and ranges of the experiment config's values, declared once (``SCHEMA``) and checked where they are read.

``utils.config`` checks every value a YAML file sets (``_base_`` files included) as it loads the file, every
``--opts`` override and every CLI shortcut (``--batch-size``, ``--keep``) as it applies it, and the finished config
once more with its interpolations resolved and the rules that tie keys together (an image size of at least one
patch). A bad value is a one-line ``UserError`` naming the key, the value and where it came from. Keys the table does
not list are not checked; a key it lists may be absent (older or partial configs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from utils.errors import UserError

DEFAULT_PATCH_SIZE = 16  # GroupViT's patch_size when model.img_encoder does not set it


@dataclass(frozen=True)
class Rule:
    """A value's kind ('int', 'number', 'bool', 'str' or 'list' of ``item``), range, choices and null-ability."""

    kind: str
    low: float | None = None  # inclusive minimum, or exclusive with low_open
    high: float | None = None  # inclusive maximum, or exclusive with high_open
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    nullable: bool = False
    item: Rule | None = None  # the rule of a list's items
    length: int | None = None  # a list's exact length
    or_str: bool = False  # a list, or else a string (e.g. a file name)

    def describe(self) -> str:
        if self.kind == "list":
            what = f"a list of {self.length or 'any number of'} values"
            what += f", each {self.item.describe()}" if self.item else ""
            return what + (", or a file name" if self.or_str else "")
        if self.choices:
            return "one of " + ", ".join(self.choices)
        what = {"int": "a whole number", "number": "a number", "bool": "true or false", "str": "a string"}[self.kind]
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return what + (" " + " and ".join(bounds) if bounds else "")

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind == "list":
            if isinstance(value, str):
                return self.or_str
            if not isinstance(value, list | tuple):
                return False
            return (self.length is None or len(value) == self.length) and \
                all(self.item is None or self.item.accepts(v) for v in value)
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str) and (not self.choices or value in self.choices)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


def _int(low: float | None = None, **kw: Any) -> Rule:
    return Rule("int", low=low, **kw)


def _num(low: float | None = None, high: float | None = None, **kw: Any) -> Rule:
    return Rule("number", low=low, high=high, **kw)


def _choice(*choices: str) -> Rule:
    return Rule("str", choices=choices)


BOOL, STR, INT = Rule("bool"), Rule("str"), _int()
POSITIVE, NON_NEGATIVE = _int(1), _int(0)
FRACTION = _num(0, 1)
STR_LIST = Rule("list", item=STR)
POSITIVE_LIST = Rule("list", item=POSITIVE)

SCHEMA: dict[str, Rule] = {
    "data.batch_size": POSITIVE,
    "data.pin_memory": BOOL,
    "data.num_workers": _int(-1),  # -1: this process's share of the cores
    "data.shuffle_buffer": NON_NEGATIVE,
    "data.seed": INT,
    "data.max_bad_fraction": FRACTION,
    "data.uint8_images": BOOL,
    "data.dataset.train": STR_LIST,
    "data.dataset.val": STR_LIST,
    "data.img_aug.deit_aug": BOOL,
    "data.img_aug.img_size": POSITIVE,
    "data.img_aug.img_scale": Rule("list", item=_num(0, 1, low_open=True), length=2),
    "data.img_aug.interpolation": _choice("bilinear", "bicubic", "nearest", "random"),
    "data.img_aug.color_jitter": _num(0, nullable=True),
    "data.img_aug.auto_augment": Rule("str", nullable=True),
    "data.img_aug.re_prob": FRACTION,
    "data.img_aug.re_mode": _choice("const", "rand", "pixel"),
    "data.img_aug.re_count": POSITIVE,
    "data.text_aug.max_seq_len": POSITIVE,
    "data.text_aug.multi_label": NON_NEGATIVE,
    "data.text_aug.word_type": STR,
    "data.text_aug.tagger": _choice("auto", "pattern", "nltk"),
    "train.start_epoch": NON_NEGATIVE,
    "train.epochs": NON_NEGATIVE,
    "train.warmup_epochs": NON_NEGATIVE,
    "train.base_lr": _num(0, low_open=True),
    "train.weight_decay": _num(0),
    "train.warmup_lr": _num(0),
    "train.min_lr": _num(0),
    "train.clip_grad": _num(0, nullable=True),
    "train.max_nonfinite_steps": NON_NEGATIVE,
    "train.accumulation_steps": NON_NEGATIVE,
    "train.amp_opt_level": _choice("O0", "O1", "O2"),
    "train.amp": _choice("auto", "fp32", "fp16", "bf16"),
    "train.text_length_multiple": POSITIVE,
    "train.compile": BOOL,
    "train.cuda_graph": BOOL,
    "train.seed": INT,
    "train.lr_scheduler.name": _choice("cosine"),
    "train.optimizer.name": _choice("adamw"),
    "train.optimizer.eps": _num(0, low_open=True),
    "train.optimizer.betas": Rule("list", item=_num(0, 1, high_open=True), length=2),
    "evaluate.eval_only": BOOL,
    "evaluate.eval_freq": POSITIVE,
    "evaluate.task": Rule("list", item=_choice("cls", "seg")),
    "evaluate.cls.save_best": BOOL,
    "evaluate.cls.template": STR,
    "evaluate.cls.classnames": Rule("list", item=STR, nullable=True, or_str=True),
    "evaluate.seg.save_best": BOOL,
    "evaluate.seg.cfg": STR,
    "evaluate.seg.template": STR,
    "evaluate.seg.opts": Rule("list"),
    "evaluate.seg.protocol": STR,  # its names: segmentation/evaluation/protocols.py
    "evaluate.seg.short_side": _int(1, nullable=True),
    "checkpoint.auto_resume": BOOL,
    "checkpoint.resume": Rule("str", nullable=True),
    "checkpoint.freq": INT,
    "checkpoint.max_kept": _int(-1),
    "checkpoint.save_freq": POSITIVE,
    "checkpoint.save_steps": NON_NEGATIVE,
    "model_name": Rule("str", nullable=True),
    "output": STR,
    "tag": Rule("str", nullable=True),
    "print_freq": POSITIVE,
    "seed": INT,
    "wandb": BOOL,
    "local_rank": NON_NEGATIVE,
    "vis": STR_LIST,
    "model.type": _choice("MultiLabelContrastive"),
    "model.img_encoder.type": _choice("GroupViT"),
    "model.text_encoder.type": _choice("TextTransformer"),
    "model.img_encoder.img_size": POSITIVE,
    "model.img_encoder.patch_size": POSITIVE,
    "model.img_encoder.embed_dim": POSITIVE,
    "model.img_encoder.num_heads": POSITIVE_LIST,
    "model.img_encoder.depths": POSITIVE_LIST,
    "model.img_encoder.num_group_tokens": Rule("list", item=NON_NEGATIVE),
    "model.img_encoder.num_output_groups": POSITIVE_LIST,
    "model.img_encoder.embed_factors": POSITIVE_LIST,
    "model.img_encoder.hard_assignment": BOOL,
    "model.img_encoder.assign_init_scale": Rule("list", item=_num(0, low_open=True)),
    "model.img_encoder.gumbel": BOOL,
    "model.img_encoder.mlp_ratio": _num(0, low_open=True),
    "model.img_encoder.qkv_bias": BOOL,
    "model.img_encoder.patch_norm": BOOL,
    "model.img_encoder.use_checkpoint": BOOL,
    "model.img_encoder.drop_rate": _num(0, 1, high_open=True),
    "model.img_encoder.attn_drop_rate": _num(0, 1, high_open=True),
    "model.img_encoder.drop_path_rate": _num(0, 1, high_open=True),
    "model.text_encoder.context_length": POSITIVE,
    "model.text_encoder.width": POSITIVE,
    "model.text_encoder.layers": POSITIVE,
    "model.text_encoder.vocab_size": POSITIVE,
    "model.text_encoder.mlp_ratio": _num(0, low_open=True),
    "model.text_encoder.with_gc": BOOL,
    "model.contrast_temperature": _num(0, low_open=True),
    "model.proj_num_layers": NON_NEGATIVE,
    "model.output_dim": POSITIVE,
    "model.multi_label": NON_NEGATIVE,
    "model.group_loss_weight": _num(0),
}


def _text(value: Any) -> str:
    return OmegaConf.to_yaml(value).strip() if isinstance(value, dict | list) else repr(value)


def check_value(key: str, value: Any, where: str) -> None:
    """``value`` (plain Python) for ``key``, from ``where`` (e.g. 'config configs/x.yml', '--opts'), against SCHEMA."""
    rule = SCHEMA.get(key)
    if rule is not None and not rule.accepts(value):
        raise UserError(f"bad value for config key '{key}' in {where}: expected {rule.describe()}, got "
                        f"{' '.join(_text(value).split())}")


def _unresolved_node(cfg: DictConfig, key: str) -> Any:
    """The node at dotted ``key`` without resolving anything; None when absent."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():
            return None
        node = node._get_node(part)
    return node


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig | ListConfig) else node._value()


def check_file_values(cfg: DictConfig, where: str) -> None:
    """The values one file sets itself (before merging): interpolations and '???' are left for ``check_config``."""
    for key in SCHEMA:
        node = _unresolved_node(cfg, key)
        if node is None or _is_deferred(node):
            continue
        check_value(key, _plain(node), where)


def _is_deferred(node: Any) -> bool:
    """Interpolated or missing ('???') somewhere inside: checked once the whole config is known."""
    if isinstance(node, DictConfig | ListConfig):
        if node._is_interpolation() or node._is_missing():
            return True
        keys: Iterable[Any] = node.keys() if isinstance(node, DictConfig) else range(len(node))
        return any(_is_deferred(node._get_node(k)) for k in keys)
    return node._is_interpolation() or node._is_missing()


def check_config(cfg: DictConfig, where: str) -> None:
    """Every listed value of the finished config, interpolations resolved, and the rules between keys."""
    for key in SCHEMA:
        node = _unresolved_node(cfg, key)
        if node is None or node._is_missing():
            continue
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=False)
        except OmegaConfBaseException as e:
            raise UserError(f"cannot resolve config key '{key}' in {where}: {' '.join(str(e).split()[:30])}") from e
        check_value(key, OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig)
                    else value, where)
    for check in CROSS_CHECKS:
        check(cfg, where)


def _patch_at_most_image(cfg: DictConfig, where: str) -> None:
    patch = OmegaConf.select(cfg, "model.img_encoder.patch_size", default=DEFAULT_PATCH_SIZE)
    for key in ("data.img_aug.img_size", "model.img_encoder.img_size"):
        size = OmegaConf.select(cfg, key, default=None)
        if isinstance(size, int) and isinstance(patch, int) and size < patch:
            raise UserError(f"bad value for config key '{key}' in {where}: {size} is smaller than one patch "
                            f"(model.img_encoder.patch_size={patch})")


CROSS_CHECKS: tuple[Callable[[DictConfig, str], None], ...] = (_patch_at_most_image,)
