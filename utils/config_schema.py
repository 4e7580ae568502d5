"""Every experiment config key, declared once (``KEYS``): its default, its type and range, and its comment.

``configs/default.yml`` is written from ``KEYS`` (``default_config_text``, by tools/write_default_config.py; a test
keeps the two equal), and ``SCHEMA`` (key -> ``Rule``) is derived from it. Adding a key is one ``Key(...)`` line plus
the code that reads it.

``utils.config`` checks every value a YAML file sets (``_base_`` files included) as it loads the file, every ``--opts``
override and every CLI shortcut (``--batch-size``, ``--keep``) as it applies it, and the finished config once more
with its interpolations resolved and the rules that tie keys together (an image size of at least one patch); the
engine's entry points (``training.train``, ``training.evaluate``) check the config they are handed the same way. A bad
value is a one-line ``UserError`` naming the key, the value and where it came from. Keys the table does not list are
not checked; a key it lists may be absent (older or partial configs). The code that reads a key trusts its rule.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from utils.errors import UserError, one_line

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

NO_DEFAULT = object()  # a key configs/default.yml leaves out (the model's keys: its classes' arguments)


class Key(NamedTuple):
    """One config key: its default in configs/default.yml, its rule (None: not checked) and the file's comment."""

    name: str
    default: Any
    rule: Rule | None
    note: str = ""


class Section(NamedTuple):
    """A mapping of configs/default.yml and the comment above it ('' as name: a comment before the next keys)."""

    name: str
    note: str = ""


HEADER = ("Defaults shared by every GroupViT experiment. An experiment file names this file in `_base_` and overrides "
          "only what differs (at least the `model` section). Values follow the official release.")

# Every config key, in the order of configs/default.yml: the one place to add one (then run
# tools/write_default_config.py, which writes configs/default.yml from this table).
KEYS: tuple[Key | Section, ...] = (
    Section("data", "data: web-dataset shards, image and text augmentation. Loader settings are per process (per "
                    "GPU)."),
    Key("data.batch_size", 256, POSITIVE, "images per GPU; the paper trains with 256 x 16 GPUs = 4096"),
    Key("data.pin_memory", True, BOOL),
    Key("data.num_workers", 6, _int(-1), "loader workers per process; -1: this process's share of the machine's "
                                         "cores"),
    Key("data.shuffle_buffer", 10000, NON_NEGATIVE, "samples kept in the webdataset shuffle buffer"),
    Key("data.seed", "${train.seed}", INT, "follows train.seed"),
    Key("data.max_bad_fraction", 0.5, FRACTION, "bad samples (unreadable, undecodable, missing image or caption, "
        "empty caption) are skipped and counted per epoch; more than this fraction of an epoch's samples stops the "
        "run (0: any bad sample stops it; 1: never stop)"),
    Key("data.uint8_images", False, BOOL, "workers send uint8 images; normalising and random erasing run on the "
        "device (same normalised values, a quarter of the bytes to copy)"),
    Section("data.dataset"),
    Key("data.dataset.meta", {
        "gcc3m": {"type": "img_txt_pair", "path": "local_data/gcc3m_shards",
                  "prefix": "gcc-train-{000000..00436}.tar", "length": 2891445},
        "gcc12m": {"type": "img_txt_pair", "path": "local_data/gcc12m_shards",
                   "prefix": "gcc-conceptual-12m-{000000..001943}.tar", "length": 11156203},
        "yfcc14m": {"type": "img_txt_pair", "path": "local_data/yfcc14m_shards",
                    "prefix": "yfcc14m-{000000..001888}.tar", "length": 14615499},
        "redcap12m": {"type": "img_txt_pair", "path": "local_data/redcap12m_shards",
                      "prefix": "redcap12m-{000000..001211}.tar", "length": 11866987},
        "imagenet": {"type": "img_cls_pair", "path": "local_data/imagenet_shards",
                     "prefix": "imagenet-val-{000000..000049}.tar", "length": 50000},
    }, None, "Every dataset the loaders know: type, shard folder, shard name pattern (brace-expanded) and sample "
             "count."),
    Key("data.dataset.train", ["gcc3m", "gcc12m", "yfcc14m"], STR_LIST, "names from meta, concatenated for training"),
    Key("data.dataset.val", ["imagenet"], STR_LIST, "names from meta used for zero-shot classification"),
    Section("data.img_aug", "Training image augmentation (DeiT/timm style); validation uses resize + center crop."),
    Key("data.img_aug.deit_aug", True, BOOL),
    Key("data.img_aug.img_size", 224, POSITIVE),
    Key("data.img_aug.img_scale", [0.08, 1.0], Rule("list", item=_num(0, 1, low_open=True), length=2),
        "random-resized-crop scale, used only when deit_aug is false"),
    Key("data.img_aug.interpolation", "bilinear", _choice("bilinear", "bicubic", "nearest", "random")),
    Key("data.img_aug.color_jitter", 0.4, _num(0, nullable=True)),
    Key("data.img_aug.auto_augment", "rand-m9-mstd0.5-inc1", Rule("str", nullable=True)),
    Key("data.img_aug.re_prob", 0.25, FRACTION, "random erasing"),
    Key("data.img_aug.re_mode", "pixel", _choice("const", "rand", "pixel")),
    Key("data.img_aug.re_count", 1, POSITIVE),
    Section("data.text_aug", "Caption tokenization; multi_label > 0 adds that many noun prompts per caption "
                             "(multi-label loss)."),
    Key("data.text_aug.max_seq_len", 77, POSITIVE),
    Key("data.text_aug.multi_label", 0, NON_NEGATIVE),
    Key("data.text_aug.word_type", "noun", STR),
    Key("data.text_aug.tagger", "auto", _choice("auto", "pattern", "nltk"), "POS tagger for the word prompts: auto "
        "(nltk's perceptron tagger when its data is installed, else textblob's bundled PatternTagger) | pattern | "
        "nltk. Never downloads."),

    Section("train", "train: schedule, optimizer and mixed precision. Learning rates are for a global batch of 4096 "
                     "and are rescaled linearly to batch_size x world_size by the training script."),
    Key("train.start_epoch", 0, NON_NEGATIVE),
    Key("train.epochs", 30, NON_NEGATIVE),
    Key("train.warmup_epochs", 2, _num(0), "may be a fraction: int(warmup_epochs x iterations per epoch) steps"),
    Key("train.base_lr", 1.6e-3, _num(0, low_open=True)),
    Key("train.weight_decay", 0.05, _num(0)),
    Key("train.warmup_lr", 4e-6, _num(0)),
    Key("train.min_lr", 4e-5, _num(0)),
    Key("train.clip_grad", 5.0, _num(0, nullable=True), "max total gradient L2 norm"),
    Key("train.max_nonfinite_steps", 10, NON_NEGATIVE, "a step with a non-finite loss or gradient norm is skipped "
        "(weights unchanged) and counted; this many in a row stop the run (0: never stop)"),
    Key("train.accumulation_steps", 0, NON_NEGATIVE, "K > 1: each optimizer step takes K iterations (micro-batches) "
        "as one batch of K x batch_size with both losses over the whole batch (feature cache; lr scaled to it)"),
    Key("train.amp_opt_level", "O1", _choice("O0", "O1", "O2"), "O0 = float32; O1/O2 = mixed precision"),
    Key("train.amp", "auto", _choice("auto", "fp32", "fp16", "bf16"), "auto: from amp_opt_level (O0 fp32; O1/O2 "
        "fp16 autocast + grad scaler on CUDA, fp32 on CPU) | fp32 | fp16 (CUDA only) | bf16 (autocast, no scaler; "
        "CPU or CUDA)"),
    Key("train.text_length_multiple", 8, POSITIVE, "the text tower runs up to the batch's last EOT rounded up to this "
        "(same features); larger = fewer distinct shapes for train.compile / train.cuda_graph"),
    Key("train.compile", False, BOOL, "torch.compile the training forward (fullgraph, one graph per text-length "
        "bucket)"),
    Key("train.cuda_graph", False, BOOL, "capture the whole training step in a CUDA graph per text-length bucket "
        "(one CUDA process, fused AdamW)"),
    Key("train.seed", 0, INT),
    Section("train.lr_scheduler"),
    Key("train.lr_scheduler.name", "cosine", _choice("cosine")),
    Section("train.optimizer"),
    Key("train.optimizer.name", "adamw", _choice("adamw")),
    Key("train.optimizer.eps", 1e-8, _num(0, low_open=True)),
    Key("train.optimizer.betas", [0.9, 0.999], Rule("list", item=_num(0, 1, high_open=True), length=2)),

    Section("evaluate", "evaluate: zero-shot ImageNet classification (cls) and zero-shot segmentation (seg)."),
    Key("evaluate.eval_only", False, BOOL),
    Key("evaluate.eval_freq", 1, POSITIVE, "evaluate every N epochs"),
    Key("evaluate.task", ["cls", "seg"], Rule("list", item=_choice("cls", "seg"))),
    Section("evaluate.cls"),
    Key("evaluate.cls.save_best", True, BOOL),
    Key("evaluate.cls.template", "subset", STR, "prompt template set for class names"),
    Key("evaluate.cls.classnames", None, Rule("list", item=STR, nullable=True, or_str=True), "class names in label "
        "order: null = the 1000 ImageNet names, a list, or a text file with one name per line (for custom "
        "validation sets)"),
    Section("evaluate.seg"),
    Key("evaluate.seg.save_best", True, BOOL),
    Key("evaluate.seg.cfg", "segmentation/configs/_base_/datasets/pascal_voc12.py", STR),
    Key("evaluate.seg.template", "simple", STR),
    Key("evaluate.seg.opts", [], Rule("list"), "dotlist overrides of the segmentation config, e.g. "
        "['test_cfg.mode=whole']"),
    Key("evaluate.seg.bg_thresh", None, _num(0, 1, nullable=True), "ours: the background threshold (null: the "
        "segmentation config's test_cfg.bg_thresh); set before opts, so replacing opts keeps it and "
        "test_cfg.bg_thresh in opts wins"),
    Key("evaluate.seg.protocol", "groupvit", STR, "groupvit: the config as it is (the reference's); sclip: short side "
        "336, slide 224/112, the 80 ImageNet templates (segmentation/evaluation/protocols.py)"),
    Key("evaluate.seg.short_side", None, _int(1, nullable=True), "test resolution: the short side in pixels (null: "
        "the protocol's)"),

    Section("checkpoint", "checkpoint: resuming and saving."),
    Key("checkpoint.auto_resume", True, BOOL, "resume from the newest checkpoint in `output` when there is one"),
    Key("checkpoint.resume", "", Rule("str", nullable=True), "checkpoint path or URL to resume from / evaluate"),
    Key("checkpoint.freq", 1, INT, "kept for compatibility; never read"),
    Key("checkpoint.max_kept", -1, _int(-1), "epoch checkpoints to keep; -1 keeps all"),
    Key("checkpoint.save_freq", 1, POSITIVE, "save every N epochs (and at the last epoch)"),
    Key("checkpoint.save_steps", 0, NON_NEGATIVE, "N > 0: also checkpoint.pth every N optimizer steps, resumed "
        "mid-epoch exactly"),

    Section("", "Run identity and misc. `???` values are filled in by get_config."),
    Key("model_name", "", Rule("str", nullable=True), "empty: <config file name>_bs<batch_size>x<world_size>"),
    Key("output", "???", STR, "--output, or output/<model_name>[/<tag>]; a saved config.yml keeps its folder"),
    Key("tag", "default", Rule("str", nullable=True)),
    Key("print_freq", 10, POSITIVE, "log every N iterations"),
    Key("seed", 0, INT, "global seed, shifted by the process rank"),
    Key("wandb", False, BOOL),
    Key("local_rank", "???", NON_NEGATIVE, "--local_rank or the LOCAL_RANK environment variable"),
    Key("vis", [], STR_LIST, "segmentation visualisation modes to write"),

    # The model section: each experiment file sets it; a key it leaves out takes its class's argument default.
    Key("model.type", NO_DEFAULT, _choice("MultiLabelContrastive")),
    Key("model.img_encoder.type", NO_DEFAULT, _choice("GroupViT")),
    Key("model.text_encoder.type", NO_DEFAULT, _choice("TextTransformer")),
    Key("model.img_encoder.img_size", NO_DEFAULT, POSITIVE),
    Key("model.img_encoder.patch_size", NO_DEFAULT, POSITIVE),
    Key("model.img_encoder.embed_dim", NO_DEFAULT, POSITIVE),
    Key("model.img_encoder.num_heads", NO_DEFAULT, POSITIVE_LIST),
    Key("model.img_encoder.depths", NO_DEFAULT, POSITIVE_LIST),
    Key("model.img_encoder.num_group_tokens", NO_DEFAULT, Rule("list", item=NON_NEGATIVE)),
    Key("model.img_encoder.num_output_groups", NO_DEFAULT, POSITIVE_LIST),
    Key("model.img_encoder.embed_factors", NO_DEFAULT, POSITIVE_LIST),
    Key("model.img_encoder.hard_assignment", NO_DEFAULT, BOOL),
    Key("model.img_encoder.assign_init_scale", NO_DEFAULT, Rule("list", item=_num(0, low_open=True))),
    Key("model.img_encoder.gumbel", NO_DEFAULT, BOOL),
    Key("model.img_encoder.mlp_ratio", NO_DEFAULT, _num(0, low_open=True)),
    Key("model.img_encoder.qkv_bias", NO_DEFAULT, BOOL),
    Key("model.img_encoder.patch_norm", NO_DEFAULT, BOOL),
    Key("model.img_encoder.use_checkpoint", NO_DEFAULT, BOOL),
    Key("model.img_encoder.drop_rate", NO_DEFAULT, _num(0, 1, high_open=True)),
    Key("model.img_encoder.attn_drop_rate", NO_DEFAULT, _num(0, 1, high_open=True)),
    Key("model.img_encoder.drop_path_rate", NO_DEFAULT, _num(0, 1, high_open=True)),
    Key("model.text_encoder.context_length", NO_DEFAULT, POSITIVE),
    Key("model.text_encoder.width", NO_DEFAULT, POSITIVE),
    Key("model.text_encoder.layers", NO_DEFAULT, POSITIVE),
    Key("model.text_encoder.vocab_size", NO_DEFAULT, POSITIVE),
    Key("model.text_encoder.mlp_ratio", NO_DEFAULT, _num(0, low_open=True)),
    Key("model.text_encoder.with_gc", NO_DEFAULT, BOOL),
    Key("model.contrast_temperature", NO_DEFAULT, _num(0, low_open=True)),
    Key("model.proj_num_layers", NO_DEFAULT, NON_NEGATIVE),
    Key("model.output_dim", NO_DEFAULT, POSITIVE),
    Key("model.multi_label", NO_DEFAULT, NON_NEGATIVE),
    Key("model.group_loss_weight", NO_DEFAULT, _num(0)),
)
SCHEMA: dict[str, Rule] = {k.name: k.rule for k in KEYS if isinstance(k, Key) and k.rule is not None}


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
            raise UserError(f"cannot resolve config key '{key}' in {where}: {one_line(e, limit=200)}") from e
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


# --------------------------------------------------------------------------------------------- configs/default.yml

_WIDTH = 118  # the file's line length
_NOTE_COLUMN = 29  # where a key's comment starts


def _yaml_value(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=math.inf).removesuffix("\n...\n").strip()


def _comment(note: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(note, _WIDTH - len(indent) - 2)]


def default_config_text() -> str:
    """configs/default.yml as ``KEYS`` declares it: the sections with their comments, every key with a default."""
    lines = _comment(HEADER, "")
    for entry in KEYS:
        *parents, name = entry.name.split(".")
        indent = "  " * len(parents)
        if isinstance(entry, Section):
            if not parents:
                lines.append("")
            lines += _comment(entry.note, indent)
            lines += [f"{indent}{name}:"] if name else []
        elif isinstance(entry.default, dict):
            lines += _comment(entry.note, indent) + [f"{indent}{name}:"]
            block = yaml.safe_dump(entry.default, default_flow_style=False, sort_keys=False, width=math.inf)
            lines += [f"{indent}  {line}" for line in block.splitlines()]
        elif entry.default is not NO_DEFAULT:
            text = f"{indent}{name}: {_yaml_value(entry.default)}"
            note = textwrap.wrap(entry.note, _WIDTH - _NOTE_COLUMN - 2)
            lines += [f"{text.ljust(_NOTE_COLUMN - 1)} # {note[0]}" if note else text]
            lines += [f"{'':{_NOTE_COLUMN}}# {line}" for line in note[1:]]
    return "\n".join(lines) + "\n"
