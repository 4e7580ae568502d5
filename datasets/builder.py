"""Webdataset loaders and image/text transforms for pretraining and zero-shot ImageNet evaluation (the reference's
datasets/builder.py: ``build_loader``, ``build_img_transform``, ``build_text_transform``).

Shards: each dataset named in ``data.dataset.train`` / ``.val`` has ``path`` and a brace-expanded ``prefix`` in
``data.dataset.meta``. Every configured local shard must exist (a missing one is a ``UserError``, not a silent
skip); ``http(s)://``, ``pipe:`` and other URLs are passed to webdataset unchecked.

Splitting: the shard list (in configuration order) is dealt to ranks, ``shards[rank::world]``, and each rank's
share to its DataLoader workers, ``[worker::num_workers]``: every shard belongs to exactly one (rank, worker).
A rank never gets more workers than shards. Training streams are endless: each worker cycles through its
shards, reshuffled on every pass, and the loader cuts the stream into epochs of
``max(1, sum(length) // (batch_size * world))`` batches, so every rank runs the same number of steps. The
validation stream reads each shard once: every image is evaluated exactly once, whatever the world size.

Epochs: every epoch restarts the training stream with seeds derived from (``data.seed``, rank, worker, epoch),
so an epoch's batches depend on nothing but its number: a run resumed at epoch N reads exactly what an
uninterrupted run reads in epoch N. (Samples still in a worker's shuffle buffer at the end of an epoch are
dropped; the next epoch reshuffles.)

Samples: ``jpg``/``png``/``jpeg`` images with a ``txt``/``text`` caption (training) or a ``cls`` label
(validation). A bad sample (unreadable or truncated tar, missing image or caption, undecodable image, empty
caption, failed transform) is skipped with a warning and counted (``SkipCorrupt``). The training loader reports
the count per epoch and stops with a ``UserError`` when more than ``data.max_bad_fraction`` of the samples an epoch
has read were bad (judged once it has read ``MIN_JUDGED_SAMPLES``, and at its end); a whole pass over a worker's
shards without one usable sample is an error as well.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import braceexpand
import numpy as np
import torch
import webdataset as wds
from omegaconf import DictConfig
from timm.data import create_transform
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import transforms
from webdataset.autodecode import DecodingError

from utils.errors import UserError

from .nouns import WordAugTokenizeWrapper
from .tokenizer import Tokenize

logger = logging.getLogger("groupvit.data")

IMAGE_KEYS = "jpg;png;jpeg"
TEXT_KEYS = "text;txt"
LABEL_KEYS = "cls"
_SAMPLE_KINDS = {"img_txt_pair": TEXT_KEYS, "img_cls_pair": LABEL_KEYS}  # meta type -> second key
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)[.]([^/]*)$")  # webdataset's split: key up to the first dot of the name
MIN_JUDGED_SAMPLES = 1000  # an epoch's bad fraction is judged from this many samples on (and at the epoch's end)
SKIPPED_KEY, ERROR_KEY = "__skipped__", "__error__"  # batch entries from the workers to the EpochLoader


# --------------------------------------------------------------------------------------------- shards


def _is_local(url: str) -> bool:
    return "://" not in url and not url.startswith("pipe:")


def expand_shards(data_cfg: DictConfig, names: Sequence[str], kind: str, missing_ok: bool = False) -> list[str]:
    """Brace-expanded shard paths of the datasets ``names`` (concatenated in order).

    ``kind`` is the meta type they must have ('img_txt_pair' or 'img_cls_pair'). Missing local shards raise a
    UserError naming them; with ``missing_ok``, a dataset with no shard on disk at all is skipped with a warning
    (a partially present dataset is still an error).
    """
    shards: list[str] = []
    for name in names:
        if name not in data_cfg.dataset.meta:
            known = ", ".join(data_cfg.dataset.meta.keys())
            raise UserError(f"dataset {name!r} is not in data.dataset.meta (known: {known})")
        meta = data_cfg.dataset.meta[name]
        if meta.type != kind:
            raise UserError(f"dataset {name!r} has type {meta.type!r}; this loader needs {kind!r}")
        urls = list(braceexpand.braceexpand(os.path.join(meta.path, meta.prefix)))
        missing = [u for u in urls if _is_local(u) and not os.path.isfile(u)]
        if missing and missing_ok and len(missing) == len(urls):
            logger.warning("dataset %r: no shard found (e.g. %s); skipped", name, missing[0])
            continue
        if missing and meta.path and _is_local(meta.path) and not os.path.isdir(meta.path):
            raise UserError(f"dataset {name!r}: its {len(urls)} shards do not exist: there is no data folder "
                            f"{meta.path} (data.dataset.meta.{name}.path)")
        if missing:
            raise UserError(f"dataset {name!r}: {len(missing)} of {len(urls)} shards do not exist, e.g. {missing[0]} "
                            f"(data.dataset.meta.{name}.path / prefix)")
        shards += urls
    return shards


def check_sample_keys(shard: str, kind: str, max_samples: int = 8) -> None:
    """Fail early, naming the keys found, when none of the first samples of a local shard has the keys of ``kind``."""
    if not _is_local(shard):
        return
    needed = [IMAGE_KEYS.split(";"), _SAMPLE_KINDS[kind].split(";")]
    samples: dict[str, set[str]] = {}
    try:
        with tarfile.open(shard) as tar:
            for member in tar:
                match = _KEY_EXT.match(member.name) if member.isfile() else None
                if match is None:
                    continue
                if match[1] not in samples and len(samples) == max_samples:
                    break
                samples.setdefault(match[1], set()).add(match[2].lower())
    except (tarfile.TarError, OSError):
        return  # unreadable: left to the loader, which skips it with a warning
    if not samples or any(all(exts & set(keys) for keys in needed) for exts in samples.values()):
        return
    found = sorted(set().union(*samples.values()))
    raise UserError(f"{shard}: samples have the keys {found}, but {kind} data needs one of "
                    f"{'/'.join(needed[0])} and one of {'/'.join(needed[1])}")


def split_shards(shards: Sequence[str], rank: int, world_size: int, worker: int = 0, num_workers: int = 1) -> list[str]:
    """The shards of one (rank, worker): ``shards[rank::world_size][worker::num_workers]``."""
    return list(shards[rank::world_size][worker::num_workers])


def worker_seed(base: int, rank: int, worker: int, num_workers: int, epoch: int = 0, world_size: int = 1) -> int:
    """Seed of one DataLoader worker whose stream starts at ``epoch``.

    At epoch 0 this is the reference's ``num_workers * rank + worker_id + data.seed``; every later epoch shifts it
    past every seed used before, so no epoch replays another's random choices.
    """
    return base + (epoch * world_size + rank) * num_workers + worker


class SkipCorrupt:
    """Webdataset error handler: warn, count, and skip the sample (``skipped`` counts per process)."""

    def __init__(self) -> None:
        self.skipped = 0

    def __call__(self, exn: Exception) -> bool:
        self.skipped += 1
        if isinstance(exn, DecodingError):  # no message of its own: the decoder's exception is its cause
            where = exn.url or ""
            reason = f"{exn.key}.{exn.k}: {type(exn.__cause__).__name__}: {exn.__cause__}"
        else:
            where = next((a for a in exn.args if isinstance(a, str) and a.endswith(".tar")), "")
            reason = f"{type(exn).__name__}: {exn.args[0] if exn.args else exn}"
        logger.warning("skipped a corrupt sample%s (%d in this process so far): %s",
                       f" in {where}" if where else "", self.skipped, " ".join(reason.split())[:200])
        return True


class RequireCaption:
    """A caption transform that refuses empty captions (the loader then counts and skips the sample)."""

    def __init__(self, transform: Callable[[str], torch.Tensor]):
        self.transform = transform

    def __call__(self, text: str) -> torch.Tensor:
        if not text.strip():
            raise ValueError("empty caption")
        return self.transform(text)


class ShardStream(IterableDataset):
    """Samples of this (rank, worker)'s shards, as dicts of transformed tensors.

    ``repeat``: cycle through the shards forever, reshuffling them (and, with ``shuffle_buffer`` > 0, the
    samples) with the worker's seed; otherwise read each shard once, in order. ``epoch`` (set before each
    iteration) enters the seeds.
    """

    def __init__(self, shards: Sequence[str], rank: int, world_size: int, keys: dict[str, str],
                 transforms_: dict[str, Callable], repeat: bool, shuffle_buffer: int = 0, seed: int = 0):
        super().__init__()
        self.shards = list(split_shards(shards, rank, world_size))
        self.rank, self.world_size = rank, world_size
        self.keys, self.transforms = keys, transforms_
        self.repeat, self.shuffle_buffer, self.seed = repeat, shuffle_buffer, seed
        self.epoch = 0
        self.handler = SkipCorrupt()

    def worker_seed(self, worker: int, num_workers: int) -> int:
        return worker_seed(self.seed, self.rank, worker, num_workers, self.epoch, self.world_size)

    def _samples(self, urls: list[str], rng: random.Random) -> Iterator[dict[str, Any]]:
        samples = wds.tarfile_to_samples(handler=self.handler)(iter([{"url": u} for u in urls]))
        if self.shuffle_buffer > 0:
            samples = wds.shuffle(self.shuffle_buffer, initial=min(100, self.shuffle_buffer), rng=rng)(samples)
        samples = wds.decode("pil", handler=self.handler)(samples)
        for sample in samples:
            try:
                yield self._prepare(sample)
            except ValueError as e:
                self.handler(e)

    def _prepare(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Our entries (``keys``: our name -> the sample's extensions, e.g. 'jpg;png;jpeg'), transformed. A missing
        member or a failed transform raises a ValueError that names the sample and its shard (for SkipCorrupt)."""
        key, shard = sample.get("__key__"), sample.get("__url__", "")
        prepared = {}
        for name, extensions in self.keys.items():
            found = next((ext for ext in extensions.split(";") if ext in sample), None)
            if found is None:
                members = ", ".join(k for k in sample if not k.startswith("__")) or "none"
                raise ValueError(f"sample {key} has no {extensions.replace(';', '/')} member (it has {members})", shard)
            try:
                transform = self.transforms.get(name)
                prepared[name] = transform(sample[found]) if transform else sample[found]
            except Exception as e:  # transforms raise many types
                raise ValueError(f"sample {key}, {found}: {type(e).__name__}: {e}", shard) from e
        return prepared

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        urls = self.shards[worker::num_workers]
        rng = random.Random(self.worker_seed(worker, num_workers))
        while urls:
            if self.repeat:
                rng.shuffle(urls)
            produced = 0
            for sample in self._samples(urls, rng):
                produced += 1
                yield sample
            if not self.repeat:
                return
            if produced == 0:
                raise UserError(f"no usable sample in {len(urls)} shard(s) ({urls[0]}, ...): every sample was "
                                "skipped (see the warnings above) or the shards are empty")


def collate(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack a list of sample dicts: image [B, 3, H, W], text [B, 77] or [B, 1+M, 77], target [B]."""
    return {key: torch.stack([s[key] for s in samples]) if torch.is_tensor(samples[0][key])
            else torch.as_tensor([s[key] for s in samples]) for key in samples[0]}


class ReportSkips:
    """Last stage of the training pipeline (in the worker): every batch carries the number of samples skipped since
    the previous one (``SKIPPED_KEY``), and a ``UserError`` of the stream ends it as a ``{ERROR_KEY: message}`` batch,
    so that the main process gets the one-line message (a DataLoader worker's exception comes with its traceback)."""

    def __init__(self, handler: SkipCorrupt):
        self.handler = handler

    def __call__(self, batches: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        reported = self.handler.skipped
        try:
            for batch in batches:
                batch[SKIPPED_KEY], reported = self.handler.skipped - reported, self.handler.skipped
                yield batch
        except UserError as e:
            yield {ERROR_KEY: str(e)}


@dataclass
class SampleCounts:
    """Samples an epoch has read in this process: delivered in batches, and skipped as bad."""

    used: int = 0
    skipped: int = 0

    @property
    def read(self) -> int:
        return self.used + self.skipped

    @property
    def bad_fraction(self) -> float:
        return self.skipped / self.read if self.read else 0.0


class EpochLoader:
    """The training batches in epochs of ``len(self)``: each iteration is one epoch, which restarts the stream with
    that epoch's seeds (the first is 0, or ``set_first_epoch``'s). ``counts`` are the current (or last) epoch's."""

    def __init__(self, loader: DataLoader, iters_per_epoch: int, max_bad_fraction: float):
        self.loader = loader
        self.iters_per_epoch = iters_per_epoch
        self.max_bad_fraction = max_bad_fraction
        self.epoch = 0
        self.counts = SampleCounts()

    def __len__(self) -> int:
        return self.iters_per_epoch

    def set_first_epoch(self, epoch: int) -> None:
        """The epoch of the next iteration (e.g. after a resume); each iteration then advances it by one."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.loader.dataset.pipeline[0].epoch = self.epoch
        counts = self.counts = SampleCounts()
        batches = iter(self.loader)
        for index in range(self.iters_per_epoch):
            batch = next(batches)
            if ERROR_KEY in batch:
                raise UserError(batch[ERROR_KEY])
            counts.skipped += batch.pop(SKIPPED_KEY)
            counts.used += len(batch["image"])
            if counts.bad_fraction > self.max_bad_fraction and (
                    index == self.iters_per_epoch - 1 or counts.read >= MIN_JUDGED_SAMPLES):
                raise UserError(f"epoch {self.epoch}: {counts.skipped} of the {counts.read} samples read were bad "
                                f"(skipped), more than data.max_bad_fraction={self.max_bad_fraction:g}; the warnings "
                                "in the log name the broken shards")
            yield batch
        self.epoch += 1


# --------------------------------------------------------------------------------------------- transforms


def build_img_transform(is_train: bool, img_aug: DictConfig, uint8: bool = False) -> Callable:
    """PIL image -> normalised float tensor [3, img_size, img_size].

    Train with ``deit_aug``: timm's DeiT recipe (random-resized crop, flip, RandAugment, random erasing; no
    colour jitter, as timm drops it when RandAugment is on). Validation: resize the short side to
    ``int(256 / 224 * img_size)``, center crop, normalise.

    ``uint8``: stop before the float conversion (uint8 [3, H, W], a quarter of the bytes to copy to a GPU); normalising
    and random erasing are then :class:`DeviceImages`' job, on the device, with the same normalised values.
    """
    size = img_aug.img_size
    if is_train and img_aug.deit_aug:
        return create_transform(size, is_training=True, color_jitter=img_aug.color_jitter,
                                auto_augment=img_aug.auto_augment, interpolation=img_aug.interpolation,
                                re_prob=img_aug.re_prob, re_mode=img_aug.re_mode, re_count=img_aug.re_count,
                                use_prefetcher=uint8)
    interpolation = transforms.InterpolationMode(img_aug.interpolation)
    if is_train:
        head = [transforms.RandomResizedCrop(size, scale=tuple(img_aug.img_scale), interpolation=interpolation),
                transforms.RandomHorizontalFlip()]
    else:
        head = [transforms.Resize(int(256 / 224 * size), interpolation=interpolation), transforms.CenterCrop(size)]
    tail = [transforms.PILToTensor()] if uint8 else [transforms.ToTensor(),
                                                      transforms.Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)]
    return transforms.Compose([*head, *tail])


class DeviceImages:
    """The end of the image transform, run on a batch on the device: uint8 [B, 3, H, W] -> float32 normalised as
    ``ToTensor`` + ``Normalize`` compute it (the same operations, so the same values), then (training with DeiT
    augmentation) timm's random erasing of the batch. Float batches pass unchanged."""

    def __init__(self, is_train: bool, img_aug: DictConfig, device: torch.device):
        self.mean = torch.tensor(IMAGENET_DEFAULT_MEAN, device=device).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_DEFAULT_STD, device=device).view(3, 1, 1)
        self.erase = None
        if is_train and img_aug.deit_aug and img_aug.re_prob > 0:
            from timm.data.random_erasing import RandomErasing

            self.erase = RandomErasing(img_aug.re_prob, mode=img_aug.re_mode, max_count=img_aug.re_count,
                                       device=str(device))

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype != torch.uint8:
            return image
        image = image.float().div_(255).sub_(self.mean).div_(self.std)  # [B, 3, H, W]
        return self.erase(image) if self.erase is not None else image


def build_text_transform(is_train: bool, text_aug: DictConfig) -> Callable[[str], torch.Tensor]:
    """Caption -> LongTensor [77], or [1 + multi_label, 77] for training with ``multi_label > 0``."""
    tokenize = Tokenize(max_seq_len=text_aug.max_seq_len)
    if is_train and text_aug.multi_label > 0:
        return WordAugTokenizeWrapper(tokenize, max_word=text_aug.multi_label, word_type=text_aug.word_type,
                                      tagger=text_aug.get("tagger", "auto"))
    return tokenize


# --------------------------------------------------------------------------------------------- loaders


def _seed_worker(worker_id: int) -> None:
    """DataLoader worker init: seed python's, numpy's and torch's RNGs (augmentations, word prompts) per worker."""
    info = get_worker_info()
    seed = info.dataset.pipeline[0].worker_seed(worker_id, info.num_workers)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def loader_workers(num_workers: int) -> int:
    """``data.num_workers``, or for -1 the process's share of this machine's cores: the cores it may use, divided by
    the processes on the node (torchrun's ``LOCAL_WORLD_SIZE``), less one for the process itself (at least 1)."""
    if num_workers >= 0:
        return num_workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1))) - 1)


def _dataloader(stream: ShardStream, batch_size: int, partial: bool, data_cfg: DictConfig, pin_memory: bool,
                *stages: Callable) -> DataLoader:
    num_workers = min(loader_workers(data_cfg.num_workers), len(stream.shards))
    batches = wds.DataPipeline(stream, wds.batched(batch_size, collation_fn=collate, partial=partial), *stages)
    return DataLoader(batches, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      worker_init_fn=_seed_worker if num_workers else None)


def build_train_loader(data_cfg: DictConfig, rank: int = 0, world_size: int = 1,
                       pin_memory: bool = False) -> EpochLoader:
    """The image-caption loader, in epochs; batches {'image': [B,3,H,W], 'text': [B,(1+M,)77]}."""
    shards = expand_shards(data_cfg, data_cfg.dataset.train, "img_txt_pair")
    if not shards:
        raise UserError("data.dataset.train names no dataset")
    if len(shards) < world_size:
        raise UserError(f"{len(shards)} training shards cannot feed {world_size} processes: every process needs "
                        "at least one shard")
    for name in data_cfg.dataset.train:
        meta = data_cfg.dataset.meta[name]
        check_sample_keys(next(braceexpand.braceexpand(os.path.join(meta.path, meta.prefix))), "img_txt_pair")
    stream = ShardStream(shards, rank, world_size, {"image": IMAGE_KEYS, "text": TEXT_KEYS},
                         {"image": build_img_transform(True, data_cfg.img_aug, data_cfg.get("uint8_images", False)),
                          "text": RequireCaption(build_text_transform(True, data_cfg.text_aug))},
                         repeat=True, shuffle_buffer=data_cfg.shuffle_buffer, seed=data_cfg.seed)
    total = sum(data_cfg.dataset.meta[name].length for name in data_cfg.dataset.train)
    if data_cfg.batch_size * world_size > total:  # the endless stream would repeat samples inside a batch
        raise UserError(f"a batch of {data_cfg.batch_size} x {world_size} process(es) is more than the {total} "
                        "training samples (data.dataset.meta.*.length): it would hold a sample twice, a false "
                        "negative of itself in the contrastive loss; lower data.batch_size")
    iters_per_epoch = total // (data_cfg.batch_size * world_size)
    loader = _dataloader(stream, data_cfg.batch_size, False, data_cfg, pin_memory, ReportSkips(stream.handler))
    return EpochLoader(loader, iters_per_epoch, data_cfg.max_bad_fraction)


def build_val_loader(data_cfg: DictConfig, rank: int = 0, world_size: int = 1, pin_memory: bool = False,
                     missing_ok: bool = False) -> DataLoader | None:
    """The zero-shot classification loader over every image once; batches {'image', 'target' [B]}.

    With ``missing_ok``, None when no val shard exists at all (the caller reports and skips the evaluation).
    """
    shards = expand_shards(data_cfg, data_cfg.dataset.val, "img_cls_pair", missing_ok=missing_ok)
    if not shards:
        if missing_ok:
            return None
        raise UserError("data.dataset.val names no dataset")
    check_sample_keys(shards[0], "img_cls_pair")
    stream = ShardStream(shards, rank, world_size, {"image": IMAGE_KEYS, "target": LABEL_KEYS},
                         {"image": build_img_transform(False, data_cfg.img_aug, data_cfg.get("uint8_images", False))},
                         repeat=False)
    return _dataloader(stream, data_cfg.batch_size, True, data_cfg, pin_memory)



# --------------------------------------------------------------------------------------------- feeding a device


class DeviceFeeder:
    """The batches of ``loader`` on ``device``, one batch ahead: while the caller runs batch i, batch i + 1 is copied
    (from pinned memory, on a side CUDA stream) and its images finished by ``images`` (:class:`DeviceImages`).

    A batch with 'text' also carries 'text_lengths', the positions the text tower runs
    (``models.transformer.text_lengths`` of the host copy of the tokens, buckets of ``length_multiple``), so that
    the model's forward reads nothing back from the device. ``len`` and ``counts`` are the loader's.
    """

    def __init__(self, loader: Iterable[dict[str, torch.Tensor]], device: torch.device, images: DeviceImages,
                 length_multiple: int = 8):
        self.loader, self.device, self.images, self.length_multiple = loader, device, images, length_multiple
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def counts(self) -> SampleCounts:
        return self.loader.counts

    def _prepare(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        from models.transformer import text_lengths

        lengths = text_lengths(batch["text"], self.length_multiple) if "text" in batch else None
        with torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext():
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            batch["image"] = self.images(batch["image"])
        if lengths is not None:
            batch["text_lengths"] = lengths
        return batch

    def _ready(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Make the compute stream wait for the copy, and keep the side stream's memory until the compute used it."""
        if self.stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)
            for value in batch.values():
                if torch.is_tensor(value):
                    value.record_stream(current)
        return batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        ahead = None
        for batch in self.loader:
            batch = self._prepare(batch)
            if ahead is not None:
                yield self._ready(ahead)
            ahead = batch
        if ahead is not None:
            yield self._ready(ahead)
