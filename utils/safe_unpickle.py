"""Reading a torch.save (or plain pickle) file without executing pickled code.

torch's weights-only unpickler does the reading, with only the OmegaConf classes that a pickled config needs (and
numpy scalars, which metrics may be) allow-listed; a file that references anything else is refused, naming it.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickletools
import re
import typing
import warnings
import zipfile
from collections.abc import Iterator
from typing import IO, Any

import torch
from omegaconf import DictConfig, ListConfig
from omegaconf.base import ContainerMetadata, Metadata
from omegaconf.nodes import AnyNode, BooleanNode, FloatNode, IntegerNode, StringNode

from utils.errors import UserError, one_line


def _allowed_globals() -> list[Any]:
    """Globals the weights-only unpickler may use beyond torch's defaults (tensors, OrderedDict)."""
    allowed: list[Any] = [
        DictConfig, ListConfig, ContainerMetadata, Metadata,
        AnyNode, StringNode, IntegerNode, FloatNode, BooleanNode,
        typing.Any, collections.defaultdict, dict, list, int, float, bool, str,
    ]  # fmt: skip
    try:  # numpy scalars (e.g. an mIoU in 'metrics'): constructors of plain values, nothing else
        import numpy as np

        scalar = (getattr(np, "_core", None) or np.core).multiarray.scalar  # numpy 2 moved core to _core
        allowed += [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype]
        allowed += [type(np.dtype(t)) for t in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "b1")]
    except (ImportError, AttributeError):
        pass
    return allowed


def _allowed_names() -> set[str]:
    """The allow-list (ours and torch's defaults, roughly) as 'module.name' strings, for error messages."""
    names = {"collections.OrderedDict", "collections.Counter", "_codecs.encode"}
    names |= {"builtins.set", "builtins.bytearray", "builtins.complex"}
    for g in _allowed_globals():
        names.add(g[1] if isinstance(g, tuple) else f"{g.__module__}.{g.__qualname__}")
    return names


def _pickled_globals(stream: IO[bytes]) -> Iterator[str]:
    """Yield the 'module.name' of every global a pickle stream refers to. Reads opcodes only, runs nothing.

    Only for naming the culprit in the error (the weights-only unpickler is what refuses the file). Not
    ``torch.serialization.get_unsafe_globals_in_checkpoint``: it reads torch.save zip archives only, so a raw
    pickle or a legacy (non-zip) torch.save file would be refused without a name, and torch's own error names
    ``torch.storage._load_from_bytes`` for a protocol-2 pickle (torch 2.14).
    """
    recent: list[str | None] = []  # what each opcode pushed, when it was a string (enough for STACK_GLOBAL)
    memo: dict[int, str | None] = {}
    while True:  # legacy (non-zip) files hold several pickles in a row, followed by raw storage bytes
        try:
            for op, arg, _ in pickletools.genops(stream):
                name = None
                if op.name == "GLOBAL":
                    name = tuple(arg.split(" ", 1))
                elif op.name == "STACK_GLOBAL" and len(recent) >= 2 and None not in recent[-2:]:
                    name = (recent[-2], recent[-1])
                if name:
                    module, attr = name
                    module, attr = _compat_pickle.NAME_MAPPING.get((module, attr), (module, attr))
                    yield f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{attr}"
                if op.name == "MEMOIZE":
                    memo[len(memo)] = recent[-1] if recent else None
                elif op.name.endswith("PUT"):
                    memo[arg] = recent[-1] if recent else None
                elif op.name.endswith("GET"):
                    recent.append(memo.get(arg))
                else:
                    recent.append(arg if isinstance(arg, str) and op.name != "GLOBAL" else None)
        except Exception:  # the end of the pickles (or garbage): nothing more to name
            return


def _forbidden_global(path: str) -> str | None:
    """The first global in the file's pickle that is outside the allow-list, if one can be found."""
    allowed = _allowed_names()
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                member = next((n for n in zf.namelist() if n.endswith("data.pkl")), None)
                if member is None:
                    return None
                with zf.open(member) as f:
                    data = io.BytesIO(f.read())
        else:
            data = open(path, "rb")  # closed by the with below
        with data:
            return next((g for g in _pickled_globals(data) if g not in allowed and not g.startswith("torch.")), None)
    except OSError:
        return None


def _reason(error: Exception) -> str:
    """The informative part of a torch.load error, on one line."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    return one_line(text, limit=200) or "no details"


def load_weights_only(path: str, map_location: Any = "cpu") -> Any:
    """What the file at ``path`` holds, read by the weights-only unpickler; a one-line UserError when it is no
    torch.save file or pickle, cannot be read, or references a global outside the allow-list."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):
        raise UserError(f"{path} is not a PyTorch checkpoint (neither a torch.save archive nor a pickle)")
    try:
        with torch.serialization.safe_globals(_allowed_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for unreadable files
        named_by_torch = re.search(r"GLOBAL ([\w.]+)", str(e))
        forbidden = _forbidden_global(path) or (named_by_torch and named_by_torch.group(1))
        if forbidden is not None:
            raise UserError(
                f"refusing to load {path}: its pickle references {forbidden}, which a checkpoint never needs; "
                "this file is not a trusted checkpoint"
            ) from None
        raise UserError(f"could not read {path} as a checkpoint ({type(e).__name__}: {_reason(e)})") from None
