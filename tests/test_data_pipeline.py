"""The webdataset pipeline (the reference's datasets/builder.py) on shards the tests generate."""

from collections import Counter
from pathlib import Path

import pytest
import torch
from helpers_train_data import VAL_LABELS, write_caption_shards, write_tiny_setup

from datasets import Tokenize
from datasets.builder import (
    ShardStream,
    build_img_transform,
    build_train_loader,
    build_val_loader,
    check_sample_keys,
    expand_shards,
    split_shards,
    worker_seed,
)
from utils.atomic_files import write_tar
from utils.config import load_config
from utils.errors import UserError


@pytest.fixture
def cfg(tmp_path):
    return load_config(write_tiny_setup(tmp_path))


def test_expand_shards_brace_lists_in_order(cfg, tmp_path):
    shards = expand_shards(cfg.data, ["tiny_pairs"], "img_txt_pair")
    assert shards == [str(tmp_path / "pairs" / f"pairs-{i:06d}.tar") for i in range(4)]
    cfg.data.dataset.meta.tiny_pairs.prefix = "pairs-{000000..000001}.tar"
    assert len(expand_shards(cfg.data, ["tiny_pairs", "tiny_pairs"], "img_txt_pair")) == 4


def test_missing_shard_is_an_error(cfg):
    cfg.data.dataset.meta.tiny_pairs.prefix = "pairs-{000000..000005}.tar"  # 4 exist
    with pytest.raises(UserError, match=r"2 of 6 shards do not exist, e\.g\. .*pairs-000004\.tar"):
        expand_shards(cfg.data, ["tiny_pairs"], "img_txt_pair")
    with pytest.raises(UserError, match="2 of 6 shards"):
        build_train_loader(cfg.data)


def test_unknown_dataset_and_wrong_type(cfg):
    with pytest.raises(UserError, match="'nope' is not in data.dataset.meta"):
        expand_shards(cfg.data, ["nope"], "img_txt_pair")
    with pytest.raises(UserError, match="has type 'img_cls_pair'"):
        expand_shards(cfg.data, ["tiny_val"], "img_txt_pair")


def test_missing_val_dataset_skipped_only_when_allowed(cfg, tmp_path):
    cfg.data.dataset.meta.tiny_val.path = str(tmp_path / "absent")
    assert build_val_loader(cfg.data, missing_ok=True) is None
    with pytest.raises(UserError, match="do not exist"):
        build_val_loader(cfg.data)


def test_wrong_keys_are_a_clear_error(cfg, tmp_path):
    write_caption_shards(tmp_path / "pairs", 4, 2, text_key="caption")
    with pytest.raises(UserError, match=r"keys \['caption', 'jpg'\].*one of text/txt"):
        build_train_loader(cfg.data)
    check_sample_keys(str(tmp_path / "val" / "val-000000.tar"), "img_cls_pair")  # fine
    with pytest.raises(UserError, match="one of cls"):
        check_sample_keys(str(tmp_path / "pairs" / "pairs-000000.tar"), "img_cls_pair")


@pytest.mark.parametrize("num_shards", [1, 5, 7, 12])
@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("num_workers", [1, 2, 4])
def test_split_shards_partitions(num_shards, world_size, num_workers):
    shards = [f"s{i}" for i in range(num_shards)]
    parts = [split_shards(shards, r, world_size, w, num_workers) for r in range(world_size) for w in range(num_workers)]
    flat = [s for part in parts for s in part]
    assert sorted(flat) == sorted(shards) and len(flat) == len(set(flat))  # no duplicate, no drop


def test_worker_seed_is_the_references():
    assert worker_seed(0, rank=0, worker=0, num_workers=6) == 0
    assert worker_seed(7, rank=2, worker=3, num_workers=6, world_size=4) == 6 * 2 + 3 + 7  # epoch 0
    seeds = {worker_seed(0, r, w, 3, epoch=e, world_size=2) for e in range(3) for r in range(2) for w in range(3)}
    assert len(seeds) == 18  # a resumed run never reuses a seed


def test_worker_seeding_deterministic_and_shifted_on_resume(cfg):
    cfg.data.num_workers = 1

    def first_batch(first_epoch):
        torch.manual_seed(0)
        loader = build_train_loader(cfg.data)
        loader.set_first_epoch(first_epoch)
        return next(iter(loader))

    a, b, c = first_batch(0), first_batch(0), first_batch(1)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["text"], b["text"])
    assert not torch.equal(a["image"], c["image"])


def test_train_batches_shapes_and_epochs(cfg):
    loader = build_train_loader(cfg.data)
    assert len(loader) == 2  # length 4 // batch 2
    for _ in range(2):  # the stream continues across epochs
        batches = list(loader)
        assert len(batches) == 2
        for batch in batches:
            assert batch["image"].shape == (2, 3, 224, 224) and batch["image"].dtype == torch.float32
            assert batch["text"].shape == (2, 4, 77) and batch["text"].dtype == torch.long  # multi_label 3
            assert (batch["text"][:, :, 0] == 49406).all()


def test_train_single_label_text(cfg):
    cfg.data.text_aug.multi_label = 0
    batch = next(iter(build_train_loader(cfg.data)))
    assert batch["text"].shape == (2, 77)


def test_train_workers_read_every_shard_once_per_pass(tmp_path):
    """2 DataLoader workers over 4 shards of 3 samples: each run of 12 batches of 1 holds every sample once."""
    from helpers_train_data import jpeg_bytes

    cfg = load_config(write_tiny_setup(tmp_path, train_length=24, batch_size=1, num_workers=2))
    for s in range(4):
        write_tar(tmp_path / "pairs" / f"pairs-{s:06d}.tar",
                  [{"__key__": f"{3 * s + i}", "jpg": jpeg_bytes(i), "txt": f"photo {3 * s + i}".encode()}
                   for i in range(3)])
    cfg.data.text_aug.multi_label = 0
    loader = build_train_loader(cfg.data)
    assert loader.loader.num_workers == 2 and len(loader) == 24
    tokenize = Tokenize()
    expected = sorted(tokenize(f"photo {i}").tolist() for i in range(12))
    texts = [batch["text"][0].tolist() for batch in loader]
    assert sorted(texts[:12]) == expected and sorted(texts[12:]) == expected


def test_val_reads_every_image_once_with_workers(cfg):
    cfg.data.num_workers = 2
    cfg.data.batch_size = 3
    loader = build_val_loader(cfg.data)
    targets = torch.cat([b["target"] for b in loader]).tolist()
    assert Counter(targets) == Counter(label for shard in VAL_LABELS for label in shard)


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_val_split_across_ranks(cfg, world_size):
    """Each rank gets whole shards; together they cover every image once (a rank may get none)."""
    targets = []
    for rank in range(world_size):
        loader = build_val_loader(cfg.data, rank, world_size)
        targets += [t for b in loader for t in b["target"].tolist()]
    assert sorted(targets) == list(range(10))


def test_corrupt_sample_skipped_with_warning_and_counted(tmp_path, warnings_of_the_loader):
    cfg = load_config(write_tiny_setup(tmp_path, train_length=6))
    write_caption_shards(tmp_path / "pairs", 4, 3, corrupt=[1, 4])
    cfg.data.shuffle_buffer = 0
    loader = build_train_loader(cfg.data)
    batches = list(loader)  # 3 batches of 2 from samples 0, 2, 3, 5, 6, 7
    assert len(batches) == 3
    stream = loader.loader.dataset.pipeline[0]
    assert isinstance(stream, ShardStream) and stream.handler.skipped == 2
    warnings = [m for m in warnings_of_the_loader if "corrupt sample" in m]
    assert len(warnings) == 2 and "(2 in this process so far)" in warnings[1]


def test_all_samples_corrupt_is_an_error_not_a_hang(tmp_path):
    cfg = load_config(write_tiny_setup(tmp_path))
    write_caption_shards(tmp_path / "pairs", 4, 3, corrupt=range(12))
    with pytest.raises(UserError, match="no usable sample"):
        list(build_train_loader(cfg.data))


def test_fewer_shards_than_processes(cfg):
    with pytest.raises(UserError, match="4 training shards cannot feed 5 processes"):
        build_train_loader(cfg.data, rank=0, world_size=5)


def test_workers_capped_by_shards(cfg):
    cfg.data.num_workers = 6
    assert build_train_loader(cfg.data, rank=1, world_size=2).loader.num_workers == 2


def test_png_and_text_keys(tmp_path, cfg):
    """'png' images and 'text' captions (the YFCC converter's key) are read as well."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (200, 10, 10)).save(buffer, format="PNG")
    for s in range(4):
        write_tar(tmp_path / "pairs" / f"pairs-{s:06d}.tar",
                  [{"__key__": f"{s}-{i}", "png": buffer.getvalue(), "text": b"a red square"} for i in range(2)])
    batch = next(iter(build_train_loader(cfg.data)))
    assert batch["image"].shape == (2, 3, 224, 224) and batch["text"].shape == (2, 4, 77)


def test_transforms():
    default = load_config(Path(__file__).resolve().parents[1] / "configs" / "default.yml")
    img_aug = default.data.img_aug
    names = [type(t).__name__ for t in build_img_transform(True, img_aug).transforms]
    assert names == ["RandomResizedCropAndInterpolation", "RandomHorizontalFlip", "RandAugment", "MaybeToTensor",
                     "Normalize", "RandomErasing"]  # no ColorJitter with RandAugment, as in the reference
    val = build_img_transform(False, img_aug)
    assert [type(t).__name__ for t in val.transforms] == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    assert val.transforms[0].size == 256
    from PIL import Image

    out = val(Image.new("RGB", (300, 260), (124, 116, 104)))
    assert out.shape == (3, 224, 224) and out.abs().max() < 0.01  # the ImageNet mean colour normalises to ~0
    img_aug.deit_aug = False
    names = [type(t).__name__ for t in build_img_transform(True, img_aug).transforms]
    assert names == ["RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
