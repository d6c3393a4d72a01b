"""Decoding uploads and encoding outputs: the one place Veil touches image files.

Decoding applies the EXIF orientation and refuses non-images, truncated files and
decompression bombs before their pixels are allocated. Encoding writes pixels only: no
EXIF, GPS, XMP, comments or thumbnails survive (the ICC profile is kept so colours stay
right; it says nothing about the person).
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from .errors import BadInput, ImageTooLarge, NotAnImage

MAX_PIXELS = 64_000_000  # a 60 MP camera photo passes; a 200 MP bomb does not
MIN_SIDE = 16  # pixels: nothing narrower holds a face
MAX_ASPECT = 20  # a wide panorama passes; a 1×20000 strip, which only a crafted file is, does not
# Veil keeps no PNG text; a small file of compressed text chunks must not cost seconds to refuse.
PngImagePlugin.MAX_TEXT_MEMORY = 1024 * 1024
MAX_FILE_BYTES = 64 * 1024 * 1024
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}  # the only formats read or written
NOT_A_PHOTO = "the file is not an image Veil can read: it takes JPEG, PNG and WebP photos"
_EXTENSIONS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB photo. ``pixels``: (H, W, 3) uint8."""

    pixels: np.ndarray
    format: str  # "JPEG", "PNG", "WEBP", … as Pillow names it
    icc_profile: bytes | None = None

    @property
    def size(self) -> tuple[int, int]:
        return self.pixels.shape[1], self.pixels.shape[0]


def read_file(path: Path, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageTooLarge(f"{path.name} is {size / 2**20:.0f} MB; the limit is {max_bytes / 2**20:.0f} MB")
        return path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path} does not exist") from None
    except IsADirectoryError:
        raise BadInput(f"{path} is a directory, not an image") from None


def sniff_image(data: bytes, max_pixels: int = MAX_PIXELS) -> str:
    """The format of a photo file, from its header alone (no pixels are decoded): "JPEG", "PNG"
    or "WEBP". NotAnImage for anything else, ImageTooLarge over ``max_pixels``; what the web
    app checks before it queues an upload."""
    with _opened(data, max_pixels) as image:
        return str(image.format)


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> DecodedImage:
    with _opened(data, max_pixels) as image:
        fmt = str(image.format)
        icc = image.info.get("icc_profile")
        # each of these copies a 12 MP photo: do them only when they change something
        if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
            image = ImageOps.exif_transpose(image)
        if image.mode != "RGB":
            image = image.convert("RGB")
        rgb = np.asarray(image)  # decoding happens here: its errors are _opened's to translate
    return DecodedImage(np.ascontiguousarray(rgb), fmt, icc)


@contextlib.contextmanager
def _opened(data: bytes, max_pixels: int) -> Iterator[Image.Image]:
    """The file opened by Pillow as one of :data:`FORMATS` only (its other parsers never see
    it), its size checked; every Pillow failure inside becomes NotAnImage or ImageTooLarge."""
    if not data:
        raise NotAnImage("the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=list(FORMATS))
            width, height = image.size
            if width * height > max_pixels:
                size = f"{width}×{height}, {width * height / 1e6:.0f} MP"
                raise ImageTooLarge(f"the image is too large ({size}); the limit is {max_pixels / 1e6:.0f} MP")
            if min(width, height) < MIN_SIDE or max(width, height) > MAX_ASPECT * min(width, height):
                raise NotAnImage(
                    f"the image is {width}×{height} pixels: Veil takes photos at least {MIN_SIDE} pixels on each "
                    f"side and at most {MAX_ASPECT} times as long as they are wide"
                )
            if image.format == "MPO":  # a camera's multi-picture JPEG: its first picture, as a JPEG
                image.format = "JPEG"
            yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses the largest bombs in open(), before we can read the size
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f" ({int(found.group(1)) / 1e6:.0f} MP)" if found else ""
        raise ImageTooLarge(f"the image is too large{size}; the limit is {max_pixels / 1e6:.0f} MP") from None
    except UnidentifiedImageError:
        raise NotAnImage(NOT_A_PHOTO) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise NotAnImage(f"the image is truncated or corrupt ({exc})") from None


def format_for_path(path: Path) -> str:
    try:
        return _EXTENSIONS[path.suffix.lower()]
    except KeyError:
        raise BadInput(f"cannot write {path.name}: use a .jpg, .png or .webp file name") from None


def output_format(source_format: str) -> str:
    """Keep JPEG/PNG/WebP as they came (nothing else is decoded); PNG for anything else."""
    return source_format if source_format in FORMATS else "PNG"


def encode_image(pixels: np.ndarray, fmt: str, icc_profile: bytes | None = None, quality: int = 92) -> bytes:
    """(H, W, 3) uint8 → file bytes with no metadata but the colour profile."""
    image = Image.fromarray(pixels, "RGB")
    options: dict[str, object] = {}
    if icc_profile:
        options["icc_profile"] = icc_profile
    if fmt == "JPEG":
        options.update(quality=quality, subsampling="4:2:0", optimize=False)
    elif fmt == "WEBP":
        options.update(quality=quality, method=4)
    elif fmt == "PNG":
        options.update(compress_level=3)  # PNG output is about exactness; level 3 is ~3× faster than 6
    else:
        raise BadInput(f"cannot write {fmt} images; use JPEG, PNG or WebP")
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def shrink_to(pixels: np.ndarray, side: int) -> np.ndarray:
    """(H, W, 3) uint8 at most ``side`` pixels on its longer side (Lanczos); as it is if it fits."""
    height, width = pixels.shape[:2]
    if max(width, height) <= side:
        return pixels
    image = Image.fromarray(pixels, "RGB")
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return np.asarray(image)
