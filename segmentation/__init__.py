"""Zero-shot semantic segmentation with GroupViT on mmsegmentation 1.x.

Importing the package first installs the ``mmcv._ext`` stand-in (``mmcv_compat``), then registers the
datasets in mmseg's registry. Public entry points live in ``segmentation.evaluation``.
"""

from . import mmcv_compat  # noqa: F401  (must precede every mmseg import)

# isort: split
from . import datasets  # noqa: F401  (registers the datasets)
