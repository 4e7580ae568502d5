"""The one check of an image input, shared by every front end (CLI and web demo, segmentation datasets, convert tools).

``check_image(data, name)`` takes the file's bytes and returns its size, or raises a one-line ``BadImage`` (a
``UserError``) for:

- an empty file (0 bytes);
- data that no image decoder recognises;
- an image larger than ``max_pixels`` (100 megapixels by default), refused from its header before any decoding,
  with its real width and height in the message (Pillow's own decompression-bomb limit is not what is reported);
- a truncated or corrupt image: the whole file is decoded (JPEGs at 1/8 scale, which still reads every byte).

``read_image_file(path)`` reads a local file and checks it (a URL is refused in one line: inputs are local files).

``check_fits(width, height, patch_size, name, after)`` refuses an image that, after a front end's resize, is smaller
than one patch on a side (the patch embedding cannot see it).

The training loader's decoder meets the same classes of bad data and skips them (``datasets.builder.SkipCorrupt``);
the convert tools skip and count what ``check_image`` refuses (``BadImageCount``).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from PIL import Image

from utils.errors import UserError, one_line

MAX_PIXELS = 100_000_000  # larger images are refused before decoding
FORMATS_HINT = "a JPEG, PNG, WebP, BMP or TIFF file"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")  # the files a folder input takes
URL_SCHEMES = ("http://", "https://", "ftp://", "s3://", "gs://")


class BadImage(UserError):
    """An image input that cannot be used, explained in one line that names it."""


class ImageSize(NamedTuple):
    width: int
    height: int


def _header_size(data: bytes) -> tuple[Image.ImageFile.ImageFile, ImageSize] | None:
    """The image opened lazily (header read, nothing decoded) and its size; None when no format recognises it.

    Pillow's decompression-bomb check is left out here (``Image.open`` would raise before the size is known):
    ``check_image`` applies its own limit, with the size in the message.
    """
    Image.init()
    prefix = data[:16]
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        accepted = not accept or accept(prefix)
        if isinstance(accepted, str) or not accepted:  # a string: a reason why the format cannot open it
            continue
        try:
            image = factory(io.BytesIO(data), "")
        except (SyntaxError, IndexError, TypeError, ValueError, OSError, EOFError):  # what Pillow's plugins raise
            continue
        return image, ImageSize(*image.size)
    return None


def check_image(data: bytes, name: str | Path, max_pixels: int = MAX_PIXELS) -> ImageSize:
    """The (width, height) of an image file's bytes ``data``; ``BadImage`` naming ``name`` if it is unusable."""
    if not data:
        raise BadImage(f"{name} is empty (0 bytes)")
    opened = _header_size(data)
    if opened is None:
        raise BadImage(f"{name} is not an image that can be read (expected {FORMATS_HINT})")
    image, size = opened
    if size.width < 1 or size.height < 1:
        raise BadImage(f"{name} has no pixels ({size.width}×{size.height})")
    if size.width * size.height > max_pixels:
        raise BadImage(f"{name} is too large ({size.width}×{size.height} pixels): at most {max_pixels / 1e6:g} "
                       "megapixels")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. Pillow's DecompressionBombWarning: the size was checked above
            if image.format == "JPEG":
                image.draft(image.mode, (max(1, size.width // 8), max(1, size.height // 8)))
            image.load()
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        reason = one_line(e)
        raise BadImage(f"{name} is a truncated or corrupt {image.format} image ({reason})") from None
    finally:
        image.close()
    return size


def check_local(path: str | Path) -> None:
    """``BadImage`` for a URL: inputs are local files (``Path`` would also fold its '//' into '/')."""
    if isinstance(path, str) and path.lower().startswith(URL_SCHEMES):
        raise BadImage(f"{path} is a URL: images are read from local files (download it first, e.g. curl -O URL)")


def read_image_file(path: str | Path, max_pixels: int = MAX_PIXELS) -> bytes:
    """The checked bytes of an image file; ``BadImage`` if it is a URL, missing, not a file or unusable."""
    check_local(path)
    path = Path(path)
    if not path.is_file():
        raise BadImage(f"input image not found: {path}")
    data = path.read_bytes()
    check_image(data, path, max_pixels)
    return data


def check_fits(width: int, height: int, patch_size: int, name: str | Path, after: str) -> None:
    """``BadImage`` unless a ``width`` x ``height`` image (its size ``after`` a front end's resize) covers one patch."""
    if width < patch_size or height < patch_size:
        raise BadImage(f"{name} is too small or too thin: {after} it is {width}×{height} pixels, less than one "
                       f"{patch_size}×{patch_size} patch")


@dataclass
class BadImageCount:
    """Images a conversion has read and the ones it skipped as bad; ``check`` stops it above ``max_bad_fraction``.

    As in the training loader, the fraction is judged from ``min_judged`` images on, and at the end (``final``).
    """

    max_bad_fraction: float
    read: int = 0
    bad: int = 0
    min_judged: int = 1000

    def __post_init__(self) -> None:
        if not 0 <= self.max_bad_fraction <= 1:
            raise UserError(f"--max-bad-fraction must be between 0 and 1, not {self.max_bad_fraction:g}")

    def add(self, ok: bool) -> None:
        self.read += 1
        self.bad += not ok

    def check(self, final: bool = False) -> None:
        if self.read and self.bad / self.read > self.max_bad_fraction and (final or self.read >= self.min_judged):
            raise UserError(f"{self.bad} of the {self.read} images read were bad (skipped), more than "
                            f"--max-bad-fraction={self.max_bad_fraction:g}; the warnings above name them")
