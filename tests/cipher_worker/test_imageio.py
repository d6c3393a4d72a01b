from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cipher_worker.errors import ImageTooLarge, NotAnImage
from cipher_worker.imageio import decode_image, encode_image, sniff_image


def _png_bomb(width: int, height: int) -> bytes:
    """A real, complete PNG of width×height black pixels that compresses to a few hundred KB."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    row = b"\0" * (width // 8 + 1)  # 1-bit greyscale rows, filter byte 0
    body = b"".join(packer.compress(row * 1000) for _ in range(height // 1000)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", **options)
    return out.getvalue()


def test_not_an_image_is_refused_clearly():
    with pytest.raises(NotAnImage, match="not an image"):
        decode_image(b"%PDF-1.7 this is a pdf")


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_only_jpeg_png_and_webp_are_read(fmt: str):
    """Pillow's other parsers never see an upload, whatever the file's name says."""
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 100, 50)).save(out, fmt)
    with pytest.raises(NotAnImage, match="JPEG, PNG and WebP"):
        sniff_image(out.getvalue())
    with pytest.raises(NotAnImage, match="JPEG, PNG and WebP"):
        decode_image(out.getvalue())
    for ok in ("JPEG", "PNG", "WEBP"):
        out = io.BytesIO()
        Image.new("RGB", (40, 30)).save(out, ok)
        assert sniff_image(out.getvalue()) == ok


def test_sniffing_refuses_a_bomb_from_its_header_alone():
    out = io.BytesIO()
    Image.new("L", (9000, 8000)).save(out, "PNG")  # 72 MP of one grey: a small file
    with pytest.raises(ImageTooLarge, match="72 MP"):
        sniff_image(out.getvalue())


def test_empty_file_is_refused():
    with pytest.raises(NotAnImage, match="empty"):
        decode_image(b"")


def test_truncated_jpeg_is_refused(astronaut_jpeg):
    with pytest.raises(NotAnImage, match="truncated or corrupt"):
        decode_image(astronaut_jpeg[: len(astronaut_jpeg) // 2])


def test_200_megapixel_bomb_is_refused_before_decoding():
    bomb = _png_bomb(20_000, 10_000)
    assert len(bomb) < 2_000_000
    with pytest.raises(ImageTooLarge, match=r"too large.*200 MP"):
        decode_image(bomb)


def test_exif_orientation_is_applied_and_all_metadata_dropped():
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    exif[0x8825] = {1: "N", 2: (51.0, 30.0, 0.0)}  # GPS
    decoded = decode_image(_jpeg(pixels, exif=exif.tobytes(), quality=95))
    assert decoded.size == (40, 60)  # upright: width and height swapped
    assert decoded.pixels[:25].mean() > 200 and decoded.pixels[35:].mean() < 50  # white now on top

    out = Image.open(io.BytesIO(encode_image(decoded.pixels, "JPEG")))
    assert not out.getexif()
    assert not any(key in out.info for key in ("exif", "xmp", "comment", "XML:com.adobe.xmp"))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_encode_roundtrip_formats(fmt):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
    back = decode_image(encode_image(pixels, fmt))
    assert back.format == fmt
    if fmt == "PNG":
        assert np.array_equal(back.pixels, pixels)


@pytest.mark.parametrize("size", [(1, 20000), (8, 400), (4000, 150)])
def test_a_strip_no_photo_is_shaped_like_is_refused_from_its_header(size: tuple[int, int]):
    out = io.BytesIO()
    Image.new("L", size).save(out, "PNG")
    with pytest.raises(NotAnImage, match="at least 16 pixels on each side"):
        sniff_image(out.getvalue())


def test_a_png_with_megabytes_of_text_is_refused():
    """Text chunks inflate before any pixel is read: past 1 MB of them (Pillow allows 64) Veil,
    which keeps no text, stops, so a small file of compressed text cannot cost seconds to refuse."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for i in range(20):
        info.add_text(f"k{i}", "x" * 100_000, zip=True)
    out = io.BytesIO()
    Image.new("RGB", (64, 64)).save(out, "PNG", pnginfo=info)
    assert len(out.getvalue()) < 50_000  # 2 MB of text in a small file
    with pytest.raises(NotAnImage):
        decode_image(out.getvalue())
