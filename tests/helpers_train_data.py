"""Test data for the pretraining tests: tiny webdataset shards and a tiny training config, all generated.

Caption shards hold ``jpg`` + ``txt`` samples; ImageNet-style shards hold ``jpg`` + ``cls``. Images are small
random-noise JPEGs (the transforms resize them to 224).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from utils.atomic_files import write_tar

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = [
    "Two dogs are playing with a red ball on the beach near a man.",
    "A cat sleeps on a wooden table.",
    "a bowl of fresh fruit",
    "The old car parked beside a house.",
    "children running in a park",
    "A plate with pizza and salad.",
]


def jpeg_bytes(seed: int, size: tuple[int, int] = (40, 32)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def write_caption_shards(folder: Path, num_shards: int, per_shard: int, name: str = "pairs",
                         text_key: str = "txt", corrupt: Sequence[int] = ()) -> str:
    """``num_shards`` caption shards ``{name}-000000.tar``...; sample indices in ``corrupt`` get broken jpg bytes.

    Returns the brace pattern (relative to ``folder``) for data.dataset.meta.<name>.prefix.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(num_shards):
        samples = []
        for i in range(per_shard):
            index = s * per_shard + i
            image = b"not a jpeg at all" if index in corrupt else jpeg_bytes(index)
            samples.append({"__key__": f"{index:06d}", "jpg": image,
                            text_key: CAPTIONS[index % len(CAPTIONS)].encode()})
        write_tar(folder / f"{name}-{s:06d}.tar", samples)
    return f"{name}-{{000000..{num_shards - 1:06d}}}.tar"


def write_class_shards(folder: Path, labels_per_shard: Sequence[Sequence[int]], name: str = "val") -> str:
    """ImageNet-style shards (``jpg`` + ``cls``), one per entry of ``labels_per_shard``; returns the brace pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    index = 0
    for s, labels in enumerate(labels_per_shard):
        samples = []
        for label in labels:
            samples.append({"__key__": f"{index:06d}", "jpg": jpeg_bytes(1000 + index), "cls": str(label).encode()})
            index += 1
        write_tar(folder / f"{name}-{s:06d}.tar", samples)
    return f"{name}-{{000000..{len(labels_per_shard) - 1:06d}}}.tar"


# 10 validation images with distinct labels, in 3 shards (uneven on 2 ranks): a duplicated or dropped image
# changes the label histogram.
VAL_LABELS = [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
VAL_CLASSNAMES = ["dog", "cat", "car", "house", "tree", "boat", "pizza", "bird", "horse", "chair"]


def write_tiny_setup(tmp: Path, epochs: int = 1, train_length: int = 4, batch_size: int = 2, num_workers: int = 0,
                     train_shards: int = 4, per_shard: int = 3, extra: dict | None = None) -> Path:
    """Shards plus a config (default.yml + the tiny golden model) that trains on them; returns the config path.

    iters per epoch = train_length // batch_size (one process).
    """
    pairs = write_caption_shards(tmp / "pairs", train_shards, per_shard)
    val = write_class_shards(tmp / "val", VAL_LABELS)
    cfg = {
        "_base_": [str(ROOT / "configs" / "default.yml"), str(ROOT / "tests" / "golden" / "tiny_model.yml")],
        "data": {
            "batch_size": batch_size, "num_workers": num_workers, "pin_memory": False, "shuffle_buffer": 4,
            "dataset": {
                "meta": {
                    "tiny_pairs": {"type": "img_txt_pair", "path": str(tmp / "pairs"), "prefix": pairs,
                                   "length": train_length},
                    "tiny_val": {"type": "img_cls_pair", "path": str(tmp / "val"), "prefix": val,
                                 "length": sum(map(len, VAL_LABELS))},
                },
                "train": ["tiny_pairs"],
                "val": ["tiny_val"],
            },
        },
        "train": {"epochs": epochs, "warmup_epochs": 1},
        "evaluate": {"task": ["cls", "seg"], "cls": {"classnames": VAL_CLASSNAMES}},
        "print_freq": 1,
    }
    for key, value in (extra or {}).items():  # dotted keys
        node = cfg
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = tmp / "tiny_train.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
