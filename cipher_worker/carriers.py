"""Carrying a recovery envelope inside an image file, and taking it out again.

In image files the envelope travels in a PNG chunk ``veIL`` (before IEND; not "safe to
copy", so an editor that changes the pixels drops it), in JPEG APP11 segments (data =
``b"VEIL\\0"``, u16 big-endian sequence number from 1, u16 count, then up to 65524 bytes
of envelope), or in a WebP RIFF chunk ``VEIL`` (after all others; a simple WebP file
first gains a VP8X header).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

from .errors import BadInput, EnvelopeError, NoEnvelope


def embed(image_bytes: bytes, envelope_bytes: bytes) -> bytes:
    """The image file with ``envelope_bytes`` embedded (replacing any envelope it already had)."""
    container = _container(image_bytes)
    stripped, _ = container.split(bytes(image_bytes))
    return container.insert(stripped, bytes(envelope_bytes))


def extract(image_bytes: bytes) -> bytes:
    """The envelope bytes embedded in an image file; NoEnvelope if it has none."""
    container = _container(image_bytes)
    _, found = container.split(bytes(image_bytes))
    if not found:
        raise NoEnvelope("this image carries no Veil recovery data")
    return container.join(found)


def strip(image_bytes: bytes) -> bytes:
    """The image file without its envelope (unchanged if it has none)."""
    return _container(image_bytes).split(bytes(image_bytes))[0]


class _Container(NamedTuple):
    """How one file format stores an envelope.

    ``split`` returns the file without our blocks and the blocks' payloads in file order;
    ``insert`` adds an envelope to a file without one; ``join`` rebuilds the envelope.
    """

    split: Callable[[bytes], tuple[bytes, list[bytes]]]
    insert: Callable[[bytes, bytes], bytes]
    join: Callable[[list[bytes]], bytes]


def _container(data: bytes) -> _Container:
    head = bytes(data[:16])
    if head.startswith(_PNG_SIGNATURE):
        return _Container(_png_split, _png_insert, _png_join)
    if head.startswith(b"\xff\xd8\xff"):
        return _Container(_jpeg_split, _jpeg_insert, _jpeg_join)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _Container(_webp_split, _webp_insert, _join_single)
    for magic, name in _UNSUPPORTED:
        if head.startswith(magic) or (magic == b"ftyp" and head[4:8] == magic):
            raise BadInput(f"{name} images cannot carry Veil recovery data; use JPEG, PNG or WebP")
    raise BadInput("this file is not a JPEG, PNG or WebP image")


_UNSUPPORTED = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"ftyp", "HEIF/AVIF"),
)


def _join_single(found: list[bytes]) -> bytes:
    if len(found) > 1:
        raise EnvelopeError("this image carries more than one block of Veil recovery data")
    return found[0]


# PNG: a chunk is u32 BE length | type | data | CRC-32 of type + data.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Ancillary (lowercase 1st letter), private (lowercase 2nd letter): decoders skip it.
_PNG_TYPE = b"veIL"


def _png_chunks(data: bytes) -> list[tuple[int, int, bytes]]:
    """(start, end, type) of every chunk up to and including IEND."""
    chunks: list[tuple[int, int, bytes]] = []
    pos = len(_PNG_SIGNATURE)
    while not chunks or chunks[-1][2] != b"IEND":
        if pos + 12 > len(data):
            raise BadInput("the PNG file is truncated")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            raise BadInput("the PNG file is truncated")
        chunks.append((pos, end, ctype))
        pos = end
    return chunks


def _png_split(data: bytes) -> tuple[bytes, list[bytes]]:
    chunks = _png_chunks(data)
    kept = [data[: len(_PNG_SIGNATURE)]]
    found = []
    for start, end, ctype in chunks:
        if ctype == _PNG_TYPE:
            found.append(data[start + 8 : end])  # data and CRC, checked only when extracting
        else:
            kept.append(data[start:end])
    kept.append(data[chunks[-1][1] :])  # bytes after IEND stay as they were
    return b"".join(kept), found


def _png_join(found: list[bytes]) -> bytes:
    blob = _join_single(found)
    body, crc = blob[:-4], blob[-4:]
    if struct.unpack(">I", crc)[0] != zlib.crc32(_PNG_TYPE + body):
        raise EnvelopeError("the photo's recovery data is corrupted (its PNG checksum is wrong)")
    return body


def _png_insert(data: bytes, payload: bytes) -> bytes:
    if len(payload) >= 2**31:
        raise BadInput("the recovery data is too large for a PNG chunk")
    iend = _png_chunks(data)[-1][0]
    chunk = struct.pack(">I", len(payload)) + _PNG_TYPE + payload
    chunk += struct.pack(">I", zlib.crc32(_PNG_TYPE + payload))
    return data[:iend] + chunk + data[iend:]


# JPEG: segments FF <marker> <u16 BE length incl. itself> <data> until SOS, then scan data.
_APP11 = 0xEB
_JPEG_ID = b"VEIL\x00"
_JPEG_PART = struct.Struct(">HH")  # sequence number (from 1), count
_JPEG_MAX_DATA = 65533
_JPEG_CHUNK = _JPEG_MAX_DATA - len(_JPEG_ID) - _JPEG_PART.size
_INCOMPLETE = "the photo's recovery data is incomplete: JPEG segments are missing or out of order"


class _Segment(NamedTuple):
    start: int  # first 0xFF byte
    end: int
    marker: int
    data: bytes  # the bytes after the length field


def _jpeg_segments(data: bytes) -> tuple[list[_Segment], int]:
    """The segments before the first scan, and where the scan (or EOI) begins."""
    segments: list[_Segment] = []
    pos = 2  # after SOI
    while True:
        if pos >= len(data) or data[pos] != 0xFF:
            raise BadInput("the JPEG file is truncated or malformed")
        m = pos + 1
        while m < len(data) and data[m] == 0xFF:  # fill bytes may precede a marker
            m += 1
        if m >= len(data):
            raise BadInput("the JPEG file is truncated")
        marker = data[m]
        if marker in (0xDA, 0xD9):  # SOS or EOI: the rest is image data we leave untouched
            return segments, pos
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            segments.append(_Segment(pos, m + 1, marker, b""))
            pos = m + 1
            continue
        if marker in (0x00, 0xD8) or m + 3 > len(data):
            raise BadInput("the JPEG file is truncated or malformed")
        end = m + 1 + int.from_bytes(data[m + 1 : m + 3], "big")
        if end > len(data) or end < m + 3:
            raise BadInput("the JPEG file is truncated or malformed")
        segments.append(_Segment(pos, end, marker, data[m + 3 : end]))
        pos = end


def _is_ours(segment: _Segment) -> bool:
    return segment.marker == _APP11 and segment.data.startswith(_JPEG_ID)


def _jpeg_split(data: bytes) -> tuple[bytes, list[bytes]]:
    segments, scan = _jpeg_segments(data)
    kept = [data[:2]] + [data[s.start : s.end] for s in segments if not _is_ours(s)] + [data[scan:]]
    return b"".join(kept), [s.data for s in segments if _is_ours(s)]


def _jpeg_insert(data: bytes, payload: bytes) -> bytes:
    count = max(1, -(-len(payload) // _JPEG_CHUNK))
    if count > 0xFFFF:
        raise BadInput("the recovery data is too large to embed in a JPEG")
    parts = []
    for i in range(count):
        body = _JPEG_ID + _JPEG_PART.pack(i + 1, count) + payload[i * _JPEG_CHUNK : (i + 1) * _JPEG_CHUNK]
        parts.append(b"\xff" + bytes([_APP11]) + struct.pack(">H", len(body) + 2) + body)
    # After SOI and the JFIF/Exif segments (APP0/APP1), which readers expect to come first.
    segments, _ = _jpeg_segments(data)
    at = 2
    for segment in segments:
        if segment.marker not in (0xE0, 0xE1):
            break
        at = segment.end
    return data[:at] + b"".join(parts) + data[at:]


def _jpeg_join(found: list[bytes]) -> bytes:
    pieces = []
    for i, data in enumerate(found):
        if len(data) < len(_JPEG_ID) + _JPEG_PART.size:
            raise EnvelopeError("the photo's recovery data is corrupted: a JPEG segment is too short")
        seq, count = _JPEG_PART.unpack_from(data, len(_JPEG_ID))
        if seq != i + 1 or count != len(found):
            raise EnvelopeError(_INCOMPLETE)
        pieces.append(data[len(_JPEG_ID) + _JPEG_PART.size :])
    return b"".join(pieces)


# WebP: RIFF | u32 LE size | WEBP | chunks of fourcc | u32 LE size | data | pad to even size.
_WEBP_FOURCC = b"VEIL"
_VP8X_ALPHA = 0x10


class _Chunk(NamedTuple):
    fourcc: bytes
    raw: bytes  # the whole chunk: header, data and pad byte


def _riff_chunks(data: bytes) -> tuple[list[_Chunk], bytes]:
    """The chunks inside the RIFF container, and any bytes after it."""
    riff_end = 8 + int.from_bytes(data[4:8], "little")
    if len(data) < 12 or riff_end > len(data):
        raise BadInput("the WebP file is truncated")
    chunks = []
    pos = 12
    while pos < riff_end:
        if pos + 8 > riff_end:
            raise BadInput("the WebP file is truncated or malformed")
        fourcc, size = struct.unpack_from("<4sI", data, pos)
        end = pos + 8 + size + (size & 1)
        if end > riff_end:
            raise BadInput("the WebP file is truncated or malformed")
        chunks.append(_Chunk(fourcc, data[pos:end]))
        pos = end
    return chunks, data[riff_end:]


def _riff(chunks: Sequence[_Chunk], trailer: bytes) -> bytes:
    body = b"".join(c.raw for c in chunks)
    if len(body) + 4 >= 2**32:
        raise BadInput("the recovery data is too large to embed in a WebP file")
    return b"RIFF" + struct.pack("<I", len(body) + 4) + b"WEBP" + body + trailer


def _riff_chunk(fourcc: bytes, payload: bytes) -> _Chunk:
    return _Chunk(fourcc, fourcc + struct.pack("<I", len(payload)) + payload + b"\x00" * (len(payload) & 1))


def _webp_split(data: bytes) -> tuple[bytes, list[bytes]]:
    chunks, trailer = _riff_chunks(data)
    kept = [c for c in chunks if c.fourcc != _WEBP_FOURCC]
    found = [c.raw[8 : 8 + int.from_bytes(c.raw[4:8], "little")] for c in chunks if c.fourcc == _WEBP_FOURCC]
    return _riff(kept, trailer), found


def _webp_insert(data: bytes, payload: bytes) -> bytes:
    chunks, trailer = _riff_chunks(data)
    if not chunks or chunks[0].fourcc not in (b"VP8X", b"VP8 ", b"VP8L"):
        raise BadInput("the WebP file has an unexpected layout")
    if chunks[0].fourcc != b"VP8X":  # a simple file: unknown chunks need the extended format
        chunks.insert(0, _vp8x_for(chunks[0]))
    return _riff([*chunks, _riff_chunk(_WEBP_FOURCC, payload)], trailer)


def _vp8x_for(image: _Chunk) -> _Chunk:
    """The VP8X header chunk of a simple WebP file: canvas size and alpha flag of its bitstream."""
    bits = image.raw[8:]
    flags = 0
    if image.fourcc == b"VP8 ":
        # Lossy key frame: 3-byte frame tag, start code 9d 01 2a, then 14-bit width and height.
        if len(bits) < 10 or bits[3:6] != b"\x9d\x01\x2a":
            raise BadInput("the WebP image data is malformed")
        width = int.from_bytes(bits[6:8], "little") & 0x3FFF
        height = int.from_bytes(bits[8:10], "little") & 0x3FFF
    else:
        # Lossless: signature 0x2f, then 14 bits width - 1, 14 bits height - 1, 1 bit alpha.
        if len(bits) < 5 or bits[0] != 0x2F:
            raise BadInput("the WebP image data is malformed")
        header = int.from_bytes(bits[1:5], "little")
        width, height = (header & 0x3FFF) + 1, ((header >> 14) & 0x3FFF) + 1
        flags |= _VP8X_ALPHA if (header >> 28) & 1 else 0
    if width == 0 or height == 0:
        raise BadInput("the WebP image data is malformed")
    payload = bytes([flags, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return _riff_chunk(b"VP8X", payload)
