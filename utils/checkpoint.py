"""Checkpoints: safe loading of official and own files (and transformers folders), atomic saving, key/shape-checked
model loading.

Loading never executes arbitrary pickled code (``utils.safe_unpickle``). Saving writes plain containers and tensors
only, so ``torch.load(path, weights_only=True)`` reads our files.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf

from models.hf_convert import is_hf_folder, is_hub_id, load_hf_checkpoint
from utils import interrupt
from utils.atomic_files import atomic_output
from utils.errors import UserError
from utils.safe_unpickle import load_weights_only

logger = logging.getLogger(__name__)

_MAX_LISTED = 10
ZIP_HEAD = b"PK\x03\x04"  # how a torch.save archive starts
_PARTIAL_SAVE = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # see _partial_name


def _download(url: str) -> str:
    """Download an http(s) checkpoint once into torch hub's checkpoint cache; return the local path."""
    name = os.path.basename(urlparse(url).path) or "checkpoint.pth"
    cache = os.path.join(torch.hub.get_dir(), "checkpoints")
    local = os.path.join(cache, name)
    if not os.path.exists(local):
        os.makedirs(cache, exist_ok=True)
        logger.info("downloading %s to %s", url, local)
        try:
            torch.hub.download_url_to_file(url, local, progress=True)
        except Exception as e:  # network errors come in many types
            raise UserError(f"could not download checkpoint {url}: {e}") from None
    return local


def load_checkpoint(path_or_url: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load a checkpoint (official release layout or ours) without executing pickled code.

    ``path_or_url``: a .pth file, an http(s) URL, a transformers GroupViT folder (config.json + weights) or a
    Hugging Face Hub id such as ``nvidia/groupvit-gcc-yfcc``; the last two are converted in memory
    (``models.hf_convert.load_hf_checkpoint``) into {'model': our state dict, 'config': {'model': ...}}.
    Returns a dict with at least 'model' (the state dict); 'config', 'metrics', 'epoch', 'optimizer',
    'lr_scheduler' and 'amp' are present only if the file has them. A bare state dict is wrapped as
    {'model': sd}. Every problem with the file raises a one-line UserError.
    """
    path = str(path_or_url)
    if path.startswith(("http://", "https://")):
        path = _download(path)
    if is_hf_folder(path) or is_hub_id(path):
        return load_hf_checkpoint(path)
    if not os.path.exists(path):
        raise UserError(f"checkpoint not found: {path}")
    if os.path.isdir(path):
        raise UserError(f"checkpoint {path} is a folder without config.json: neither a checkpoint file nor a "
                        "Hugging Face model folder")
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} is not a file")
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(ZIP_HEAD) and not zipfile.is_zipfile(path):
        raise UserError(f"{path} is truncated: a torch.save archive without its end (an interrupted copy or a full "
                        f"disk?){_complete_hint(path)}")
    ckpt = load_weights_only(path, map_location)
    if isinstance(ckpt, Mapping) and "model" not in ckpt and ckpt and all(torch.is_tensor(v) for v in ckpt.values()):
        return {"model": ckpt}
    if not isinstance(ckpt, Mapping):
        raise UserError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict")
    if "model" not in ckpt:
        keys = ", ".join(map(str, list(ckpt)[:_MAX_LISTED])) or "none"
        raise UserError(f"{path} has no 'model' entry (its keys: {keys})")
    if not isinstance(ckpt["model"], Mapping):
        raise UserError(f"{path}: 'model' is a {type(ckpt['model']).__name__}, not a state dict")
    return dict(ckpt)


def _plain(obj: Any, where: str = "state") -> Any:
    """Copy of obj with OmegaConf containers as plain ones, numpy scalars as python and tensors contiguous."""
    if isinstance(obj, DictConfig | ListConfig):
        return OmegaConf.to_container(obj, resolve=True)
    if torch.is_tensor(obj):
        return obj.contiguous()
    if isinstance(obj, Mapping):
        out = collections.OrderedDict() if isinstance(obj, collections.OrderedDict) else {}
        for k, v in obj.items():
            out[k] = _plain(v, f"{where}[{k!r}]")
        if hasattr(obj, "_metadata"):  # state_dict() version info used by load_state_dict
            out._metadata = _plain(obj._metadata, f"{where}._metadata")
        return out
    if isinstance(obj, torch.Size):
        return obj
    if isinstance(obj, list | tuple):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    if type(obj).__module__ == "numpy" and getattr(obj, "ndim", None) == 0:
        return obj.item()
    if obj is None or isinstance(obj, bool | int | float | complex | str | bytes | torch.dtype | torch.device):
        return obj
    raise TypeError(f"save_checkpoint: {where} is a {type(obj).__name__}, which weights-only loading cannot read")


def _partial_name(final: Path) -> Path:
    """The temporary name ``save_checkpoint`` writes ``final`` under (hidden, unique, never matching ``*.pth``)."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")


def remove_partial_saves(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of saves that never completed (a killed process leaves them) from ``folder``;
    returns them. Only for a folder that no other process is saving into."""
    partial = [p for p in Path(folder).glob(".*.tmp") if _PARTIAL_SAVE.match(p.name) and p.is_file()]
    for path in partial:
        path.unlink()
    return partial


def _os_error(error: BaseException | None) -> OSError | None:
    """The OSError behind ``error``, if any (torch's zip writer turns a failed write into a RuntimeError)."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def save_checkpoint(state: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Save state atomically so that ``torch.load(path, weights_only=True)`` reads it.

    OmegaConf containers become plain dicts/lists and tensors are made contiguous. The file is written
    to a temporary name in the same directory, fsynced and renamed over ``path``; on failure the
    temporary file is removed and any previous file at ``path`` is left as it was. A write the system refuses
    (a full disk, a quota) is a one-line UserError that names the file and says how to go on
    (``utils.interrupt.progress.resume``: the run's last complete checkpoint).
    """
    state = _plain(state)
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_output(final, tmp=_partial_name(final)) as tmp, open(tmp, "xb") as f:
            torch.save(state, f)
    except (OSError, RuntimeError) as e:
        cause = _os_error(e)
        if cause is None:
            raise
        reason = cause.strerror or str(cause)
        go_on = f"; {interrupt.progress.resume}" if interrupt.progress.resume else ""
        raise UserError(f"could not save {final}: {reason}; the files already in {final.parent} are as they "
                        f"were{go_on}") from e


def _strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """Drop the DistributedDataParallel 'module.' prefix when every key has it (metadata included)."""
    if not state_dict or not all(k.startswith("module.") for k in state_dict):
        return state_dict
    out = collections.OrderedDict((k[len("module.") :], v) for k, v in state_dict.items())
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        out._metadata = {
            ("" if k == "module" else k[len("module.") :]): v
            for k, v in metadata.items()
            if k == "module" or k.startswith("module.")
        }
    return out


def _listing(title: str, lines: list[str]) -> list[str]:
    """An indented report section, capped at _MAX_LISTED entries."""
    if not lines:
        return []
    shown = [f"    {ln}" for ln in lines[:_MAX_LISTED]]
    if len(lines) > _MAX_LISTED:
        shown.append(f"    ... and {len(lines) - _MAX_LISTED} more")
    return [f"  {title} ({len(lines)}):", *shown]


def load_model_state(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> None:
    """Load state_dict into model after comparing keys and shapes.

    A leading 'module.' on every key is stripped. Any missing key, unexpected key or shape mismatch
    raises a readable UserError when strict; otherwise the same report is logged as a warning and the
    entries that fit are loaded. Shape mismatches are never loaded.
    """
    state_dict = _strip_module_prefix(state_dict)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shape = {k: list(getattr(v, "shape", ())) for k, v in state_dict.items()}
    model_shape = {k: list(getattr(v, "shape", ())) for k, v in expected.items()}
    mismatched = [k for k in state_dict if k in expected and shape[k] != model_shape[k]]
    if missing or unexpected or mismatched:
        report = "\n".join(
            [
                f"checkpoint does not fit the model: {len(missing)} missing, {len(unexpected)} unexpected, "
                f"{len(mismatched)} shape mismatches",
                *_listing("missing in checkpoint", missing),
                *_listing("unexpected in checkpoint", unexpected),
                *_listing(
                    "shape mismatches",
                    [f"{k}: checkpoint {shape[k]} vs model {model_shape[k]}" for k in mismatched],
                ),
            ]
        )
        if strict:
            raise UserError(report)
        logger.warning("%s", report)
    skip = set(unexpected) | set(mismatched)
    fitting = collections.OrderedDict((k, v) for k, v in state_dict.items() if k not in skip)
    if hasattr(state_dict, "_metadata"):
        fitting._metadata = state_dict._metadata
    model.load_state_dict(fitting, strict=not missing)


def truncated(path: Path) -> bool:
    """``path`` starts as a torch.save archive but lacks its end (an interrupted copy; our saves are atomic)."""
    with open(path, "rb") as f:
        return f.read(4) == ZIP_HEAD and not zipfile.is_zipfile(path)


def _complete_checkpoints(folder: Path) -> list[Path]:
    """The ``*.pth`` files of ``folder`` that are not truncated, newest (modification time) first."""
    found = [p for p in folder.glob("*.pth") if p.is_file() and not truncated(p)] if folder.is_dir() else []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _complete_hint(path: str | os.PathLike) -> str:
    """'; the newest complete checkpoint beside it is ...' for a message about a truncated ``path``."""
    others = [p for p in _complete_checkpoints(Path(path).parent) if p.name != Path(path).name]
    return f"; the newest complete checkpoint beside it is {others[0]}" if others else ""


def auto_resume_helper(output_dir: str | os.PathLike) -> str | None:
    """The checkpoint to resume from in ``output_dir``: ``checkpoint.pth`` if present, else the newest ``*.pth``
    by modification time, else None (the reference's rule). A truncated ``checkpoint.pth`` (an interrupted copy)
    is passed over with a warning that names it, or refused when no complete checkpoint is beside it."""
    folder = Path(output_dir)
    latest = folder / "checkpoint.pth"
    if latest.is_file() and not truncated(latest):
        return str(latest)
    candidates = _complete_checkpoints(folder)
    if latest.is_file():
        if not candidates:
            raise UserError(f"{latest} is truncated (an interrupted copy?) and no complete checkpoint is beside it: "
                            "put a complete copy there, or move it away to start afresh")
        logging.getLogger("groupvit").warning(  # the run's logger (utils.logger)
            f"{latest} is truncated (an interrupted copy?): resuming from {candidates[0]}, the newest complete one")
    return str(candidates[0]) if candidates else None
