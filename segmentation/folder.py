"""Segment many images with one segmentor, the model loaded once (``demo/demo_seg.py --input FOLDER|GLOB|LIST.txt``).

DataLoader workers read, check and resize the images (the segmentor's test pipeline) while the encoder runs; each
batch of images goes through ``GroupViTSegInference.predict_images``, which sends their crops of one size through
the encoder together, with the one-image path's segmentation rule. Outputs (``label_outputs``): a label map per
image, ``classes.json``, ``shares.csv``, ``errors.csv``, and the ``--vis`` pictures under ``vis_imgs/<mode>/``.

A bad image (unreadable, too large, too thin after the resize) is listed in ``errors.csv`` and the run goes on.
Images whose label map exists are skipped, so a stopped run continues where it was; a stop (Ctrl-C) ends after at
most one batch's work, with the tables written for what is done (``utils.interrupt``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from mmengine.dataset import pseudo_collate
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from datasets.image_check import BadImage
from utils import interrupt

from .evaluation.builder import build_image_pipeline
from .evaluation.group_vit_seg import GroupViTSegInference
from .image_files import ImageInput, read_image
from .label_outputs import LabelOutputs
from .vis import visualize_sample


class ImageFiles(Dataset):
    """Images read, checked and put through a test pipeline: (index, packed inputs, None) or, for an image that
    cannot be used, (index, None, the one-line reason)."""

    def __init__(self, images: Sequence[ImageInput], test_pipeline: Sequence[dict]):
        self.images = list(images)
        self.pipeline = build_image_pipeline(test_pipeline)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[int, dict | None, str | None]:
        path = self.images[index].path
        try:
            packed = self.pipeline(dict(img=read_image(path)))
        except BadImage as e:
            return index, None, str(e)
        except OSError as e:  # e.g. a file that cannot be read
            return index, None, f"{path}: {e.strerror or e}"
        packed["data_samples"].set_metainfo({"img_path": str(path)})
        return index, packed, None


@dataclass
class FolderResult:
    """The images written in this run, those skipped as already done, and the failed ones with their reason."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


@torch.no_grad()
def segment_folder(seg_model: GroupViTSegInference, images: Sequence[ImageInput], outputs: LabelOutputs,
                   modes: Sequence[str] = (), batch_size: int = 4, workers: int = 2,
                   progress: bool = True) -> FolderResult:
    """Segment ``images`` into ``outputs`` (claimed first: see ``LabelOutputs.claim``), ``batch_size`` images per
    encoder pass, read by ``workers`` processes (0: in this one); ``modes``: the pictures to write as well."""
    outputs.check_names([image.name for image in images])
    outputs.claim()
    result = FolderResult()
    todo = []
    for image in images:
        if outputs.done(image.name):
            result.skipped.append(image.name)
        else:
            todo.append(image)
    # torch runs each worker on one thread; cv2.setNumThreads in a forked worker can hang on the parent's pool
    loader = DataLoader(ImageFiles(todo, seg_model.test_pipeline), batch_size=batch_size, num_workers=workers,
                        collate_fn=list)
    counts: dict[Path, np.ndarray] = {}
    interrupt.progress.resume = (f"run the same command again: the label maps in {outputs.out_dir} are kept and "
                                 "their images skipped")
    bar = tqdm(total=len(todo), unit="img", desc="segmenting", disable=not progress, dynamic_ncols=True)
    try:
        for batch in loader:
            interrupt.now_doing(f"segmenting images ({bar.n} of {len(todo)} done)")
            ready = []
            for index, packed, error in batch:
                name = todo[index].name
                if error is None:
                    data = seg_model.data_preprocessor(pseudo_collate([packed]), False)
                    inputs, sample = data["inputs"], data["data_samples"][0]  # [1, 3, h, w]
                    try:
                        seg_model.check_fits(inputs, [sample.metainfo])
                        ready.append((name, inputs, sample))
                    except BadImage as e:
                        error = str(e)
                if error is not None:
                    result.failed.append((name, error))
            samples = seg_model.predict_images([r[1] for r in ready], [r[2] for r in ready]) if ready else []
            for (name, inputs, _), sample in zip(ready, samples, strict=True):
                label = sample.pred_sem_seg.data[0].cpu().numpy()  # [H, W]
                if modes:
                    visualize_sample(seg_model, inputs, sample, modes, outputs.out_dir / "vis_imgs",
                                     name.with_suffix("").as_posix())
                outputs.write_label(name, label)  # last: an image counts as done once its label map exists
                counts[name] = outputs.class_counts(label)
                result.written.append(name)
            bar.update(len(batch))
    finally:
        bar.close()
        outputs.write_tables([image.name for image in images], counts, result.failed)
    return result
