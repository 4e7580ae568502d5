"""Experiment configs: YAML files with `_base_` inheritance, `--opts` overrides and CLI shortcuts.

The behaviour follows the official GroupViT loader (see the spec, section 2) with three deliberate fixes:
a list `_base_` works (each path relative to the file that names it), `--opts` also takes the
`key value` pairs the original README shows, and mistakes raise a one-line `UserError`. Every value is checked
against its declared type and range (`utils.config_schema.SCHEMA`) where it is read: in its file, in `--opts`,
from a CLI shortcut, and in the finished config.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from utils.config_schema import check_config, check_file_values, check_value
from utils.errors import UserError, one_line

__all__ = ["all_keys", "apply_opts", "cfg_to_dict", "get_config", "load_config", "parse_opts"]

# CLI argument name -> config key; applied only when the script has the argument and it was given.
SHORTCUTS: tuple[tuple[str, str], ...] = (
    ("batch_size", "data.batch_size"),
    ("amp_opt_level", "train.amp_opt_level"),
    ("resume", "checkpoint.resume"),
    ("eval", "evaluate.eval_only"),
    ("keep", "checkpoint.max_kept"),
)

# Keys get_config computes from the command line (the output folder decides which run lock is taken).
SET_BY_FLAGS = {"output": "--output (and --tag)", "local_rank": "--local_rank or the LOCAL_RANK variable"}
# What every run reads from its config, whatever the script (a file not built on configs/default.yml lacks them).
REQUIRED = ("data.batch_size", "model_name", "checkpoint", "evaluate")
_ABSENT = object()

# An --opts item that starts like `some.key=`: never taken as the value of a preceding bare key.
_KEY_ASSIGNMENT = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*=")
_RUN_SUFFIX = re.compile(r"_bs\d+x\d+$")  # what get_config appends to model_name


# --------------------------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike[str]) -> DictConfig:
    """Load a YAML config and merge it over its `_base_` file(s); the `_base_` key is kept."""
    return _load(Path(path), chain=(), referrer=None)


def _load(path: Path, chain: tuple[Path, ...], referrer: Path | None) -> DictConfig:
    if not path.is_file():
        named_in = f" (named in _base_ of {referrer})" if referrer else ""
        raise UserError(f"config file not found: {path}{named_in}")
    real = path.resolve()
    if real in chain:
        raise UserError(f"config _base_ cycle: {' -> '.join(str(p) for p in (*chain, real))}")
    try:
        cfg = OmegaConf.load(path)
    except yaml.YAMLError as e:
        raise UserError(f"cannot parse config {path}: {one_line(e)}") from e
    except OmegaConfBaseException as e:
        raise UserError(f"cannot parse config {path}: {one_line(e)}") from e
    if not isinstance(cfg, DictConfig):
        raise UserError(f"config {path} must be a mapping at the top level")
    if not cfg.keys():
        raise UserError(f"config {path} is empty (an experiment config names configs/default.yml in _base_ and "
                        "sets at least a model section)")
    check_file_values(cfg, str(path))
    if "_base_" not in cfg:
        return cfg
    bases = cfg._base_
    names = [bases] if isinstance(bases, str) else list(bases) if isinstance(bases, ListConfig) else None
    if not names or not all(isinstance(name, str) for name in names):
        raise UserError(f"_base_ in {path} must be a file name or a list of file names, not {bases!r}")
    parents = [_load(path.parent / name, (*chain, real), referrer=path) for name in names]
    merged = OmegaConf.merge(*parents, cfg)  # later files win; lists are replaced whole
    assert isinstance(merged, DictConfig)
    return merged


# --------------------------------------------------------------------------------------------- --opts


def parse_opts(opts: Sequence[str] | None) -> list[str]:
    """Normalise `--opts` to `key=value` items; `key value` pairs (as in the original README) are joined.

    A bare key takes the next item as its value, unless that item is itself a `key=value` assignment.
    """
    items, out, i = list(opts or []), [], 0
    while i < len(items):
        item = items[i]
        if "=" in item:
            if not item.split("=", 1)[0].strip():
                raise UserError(f"--opts item '{item}' has no key before '='")
            out.append(item)
            i += 1
        elif i + 1 < len(items) and not _KEY_ASSIGNMENT.match(items[i + 1]):
            out.append(f"{item}={items[i + 1]}")
            i += 2
        else:
            raise UserError(f"--opts key '{item}' has no value (write {item}=VALUE or '{item} VALUE')")
    return out


def all_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every dotted key of `cfg`, sections included (lists count as leaves)."""
    keys = []
    for key in cfg.keys():
        full = f"{prefix}{key}"
        keys.append(full)
        child = cfg._get_node(key)
        if isinstance(child, DictConfig):
            keys.extend(all_keys(child, f"{full}."))
    return keys


def _unknown_key(cfg: DictConfig, key: str) -> UserError:
    close = difflib.get_close_matches(key, all_keys(cfg), n=3, cutoff=0.6)
    hint = f"did you mean: {', '.join(close)}?" if close else "no similar key"
    return UserError(f"unknown config key '{key}' ({hint})")


def _lookup(cfg: DictConfig, key: str) -> Any:
    """The node at a dotted key (without resolving it); UserError when the key does not exist."""
    node: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, ListConfig):
            prefix = ".".join(parts[:i])
            raise UserError(f"config key '{prefix}' is a list: set it whole, e.g. {prefix}=[...]")
        if not isinstance(node, DictConfig) or part not in node.keys():
            raise _unknown_key(cfg, key)
        node = node._get_node(part)
    return node


def _check_kind(key: str, node: Any, new: Any, text: str) -> None:
    """The new value must have the kind of the default it replaces.

    Sections take mappings, lists take lists, numbers take numbers and true/false keys take bools; a key whose
    default is null (or a string, or an interpolation) takes anything but a container replacing a string.
    """
    is_container = isinstance(new, DictConfig | ListConfig)
    if isinstance(node, DictConfig):
        expected = None if isinstance(new, DictConfig) else "a mapping {...}"
    elif isinstance(node, ListConfig):
        expected = None if isinstance(new, ListConfig) else "a list [...]"
    elif node._is_interpolation() or node._value() is None:
        expected = None
    elif is_container:
        expected = "a single value"
    else:
        old, value = node._value(), new._value()
        if value is None or isinstance(old, str):
            expected = None
        elif isinstance(old, bool):
            expected = None if isinstance(value, bool) else "true or false"
        elif isinstance(old, int | float):
            expected = None if isinstance(value, int | float) and not isinstance(value, bool) else "a number"
        else:
            expected = None
    if expected:
        raise UserError(f"wrong type for config key '{key}': expected {expected}, got '{text}'")


def apply_opts(cfg: DictConfig, opts: Sequence[str] | None) -> DictConfig:
    """Merge `--opts` overrides (values parsed as YAML) into `cfg` in place and return it.

    Only existing keys can be set, whatever the struct flag says.
    """
    for item in parse_opts(opts):
        key, text = item.split("=", 1)
        key = key.strip()
        node = _lookup(cfg, key)
        try:
            override = OmegaConf.from_dotlist([f"{key}={text}"])
        except (OmegaConfBaseException, yaml.YAMLError) as e:
            raise UserError(f"cannot parse --opts item '{item}': {one_line(e)}") from e
        _check_kind(key, node, _lookup(override, key), text)
        check_file_values(override, f"--opts item '{item}'")
        try:
            cfg.merge_with(override)
        except ConfigKeyError as e:  # an unknown key inside a mapping value, e.g. train={base_lrr: 1}
            raise _unknown_key(cfg, e.full_key or key) from e
        except OmegaConfBaseException as e:
            raise UserError(f"wrong value for config key '{e.full_key or key}': {one_line(e)}") from e
    return cfg


# --------------------------------------------------------------------------------------------- get_config


def get_config(args: argparse.Namespace) -> DictConfig:
    """Build the read-only run config from a script's parsed arguments, in the order of the reference's
    utils/config.py ``get_config``.

    Arguments a script does not define are skipped, so every entry point can share this.
    Unlike the reference, `amp_opt_level` is applied only when given (the scripts default it to None).
    """
    cfg = load_config(args.cfg)
    OmegaConf.set_struct(cfg, True)
    opts = getattr(args, "opts", None)
    for item in parse_opts(opts):
        key = item.split("=", 1)[0].strip()
        if key in SET_BY_FLAGS:  # get_config sets them: an --opts value would be dropped silently
            raise UserError(f"config key '{key}' is set by {SET_BY_FLAGS[key]}, not --opts")
    if opts:
        apply_opts(cfg, opts)
    for name, key in SHORTCUTS:
        value = getattr(args, name, None)
        if value is not None and value is not False:
            _lookup(cfg, key)
            check_value(key, value, f"--{name.replace('_', '-')}")
            OmegaConf.update(cfg, key, value, merge=False)
    missing = [key for key in REQUIRED if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT]
    if missing:
        raise UserError(f"{args.cfg} is not an experiment config: it lacks {', '.join(missing)} (build it on "
                        "configs/default.yml with _base_, as configs/group_vit_gcc_yfcc_30e.yml does)")

    if not cfg.model_name:
        cfg.model_name = Path(args.cfg).stem
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    # The _bs<batch>x<world> suffix is derived: a run's saved config.yml holds it, and gets it replaced, not doubled.
    cfg.model_name = f"{_RUN_SUFFIX.sub('', cfg.model_name)}_bs{cfg.data.batch_size}x{world_size}"
    saved_output = None if OmegaConf.is_missing(cfg, "output") else cfg.output  # a saved config.yml's own folder
    tag = getattr(args, "tag", None)
    if getattr(args, "output", None) or tag or not saved_output:
        cfg.output = getattr(args, "output", None) or os.path.join("output", cfg.model_name)
        if tag:
            cfg.tag = tag
            cfg.output = os.path.join(cfg.output, tag)
    if getattr(args, "wandb", None):
        cfg.wandb = True
    vis = getattr(args, "vis", None)
    if vis:
        cfg.vis = list(vis)
    local_rank = getattr(args, "local_rank", None)
    cfg.local_rank = int(local_rank if local_rank is not None else os.environ.get("LOCAL_RANK", 0))

    check_config(cfg, f"the config of {args.cfg}")
    OmegaConf.set_readonly(cfg, True)
    return cfg


def cfg_to_dict(cfg: DictConfig, resolve: bool = True) -> dict[str, Any]:
    """A plain nested dict copy of `cfg` (interpolations resolved by default)."""
    container = OmegaConf.to_container(cfg, resolve=resolve)
    assert isinstance(container, dict)
    return container  # type: ignore[return-value]
