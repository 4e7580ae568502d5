"""The one place that makes mmseg 1.x importable with mmcv-lite (no compiled ``mmcv._ext``).

``mmseg.datasets``, ``mmseg.models``, ``mmseg.apis`` and ``mmseg.utils`` import ``mmcv.ops``, whose
loader checks ``hasattr(mmcv._ext, op)`` for every compiled op. GroupViT's evaluation path calls none
of them, so a stand-in module whose ops raise ``NotImplementedError`` when called is enough. It is
installed only when no real ``mmcv._ext`` exists (a compiled mmcv wins). Import this module before
anything from mmseg; ``segmentation/__init__.py`` does.
"""

import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Callable

_NAME = "mmcv._ext"


def _missing_op(name: str) -> Callable[..., None]:
    def op(*args, **kwargs) -> None:
        raise NotImplementedError(f"mmcv op '{name}' needs compiled mmcv (mmcv-lite is installed)")

    op.__name__ = name
    return op


def _getattr(name: str) -> Callable[..., None]:
    if name.startswith("__"):  # keep the import machinery's probes (__path__, __file__, ...) honest
        raise AttributeError(name)
    return _missing_op(name)


def install() -> None:
    """Register the stand-in as ``mmcv._ext`` unless a compiled one can be imported."""
    if _NAME in sys.modules or importlib.util.find_spec(_NAME) is not None:
        return
    module = types.ModuleType(_NAME, "Stand-in for mmcv's compiled ops (see segmentation/mmcv_compat.py).")
    # A real spec: mmengine's mmcv_full_available() calls find_loader on it (loader None -> "not full").
    module.__spec__ = importlib.machinery.ModuleSpec(_NAME, None)
    module.__getattr__ = _getattr  # type: ignore[method-assign]
    sys.modules[_NAME] = module


install()
