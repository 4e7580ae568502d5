"""segmentation.segmentor_cache: one segmentor per (preset, classes, threshold), never changed by a later request."""

from pathlib import Path

import torch
from omegaconf import OmegaConf

from models import build_model
from segmentation.segmentor_cache import SegmentorCache

TINY = Path(__file__).parent / "golden" / "tiny_model.yml"


def test_a_threshold_request_leaves_the_cached_segmentors_as_they_were():
    torch.manual_seed(0)
    cache = SegmentorCache(build_model(OmegaConf.load(TINY).model).eval(), size=2)
    default = cache.get("cup, saucer")
    assert default.classes == ("background", "cup", "saucer") and default.bg_thresh == 0.95  # the VOC config's
    low = cache.get("cup, saucer", 0.25)
    assert low is not default and low.bg_thresh == 0.25 and default.bg_thresh == 0.95
    assert torch.equal(low.text_embedding, default.text_embedding)
    assert cache.get(" cup,saucer , cup") is default  # the same classes once resolved: a cache hit
    cache.get("teapot, kettle")  # evicts the least recently used entry (threshold 0.25)
    assert cache.get("cup, saucer", 0.25) is not low
