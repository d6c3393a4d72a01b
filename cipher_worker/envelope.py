"""The recovery envelope of a photo: what a key holder needs to bring its faces back.

Binary format, version 2 (``Envelope.to_bytes``; version 1 is still read); integers are
little-endian:

============================  ==========================================================
field                         encoding
============================  ==========================================================
magic                         4 bytes ``b"VEIL"``
version                       u8: 2 (1: the format before face-shaped masks)
codec_id                      u16 length + UTF-8 text
codec_fingerprint             16 bytes
fidelity                      u8: 0 = ``exact``, 1 = ``latent``
sealed_content_key            u16 length + bytes
nonce                         16 bytes
image_size                    u32 width, u32 height (pixels)
face count                    u16, then for each face:
  transform                   array of 6 f8 (the 2×3 matrix, row-major)
  box                         4 × i32: x0, y0, x1, y1
  mask                        v2: u16 side M, u32 length + zlib of the M×M u8 mask weights
                              (0–255) over the crop; v1: array of f8 (an ellipse)
  attributes                  array of f4
  identity                    array of u4 (the encrypted identity u')
  candidate                   v2 only: u16, which of the face's candidate pads made u'
  skin                        v2 only: array of f4, empty or the original's inner-face Lab
                              mean and spread (6 values; latent recovery matches them)
  pixels                      u8 flag: 0 = none; 1 = then u32 length + bytes
mac                           32 bytes: HMAC-SHA256 of every byte before it
============================  ==========================================================

An array is a u8 dtype code (1 = f8, 2 = f4, 3 = u4), a u32 element count and the
elements. Every envelope has exactly one encoding, so parsing and re-encoding gives the
same bytes; the MAC key is HKDF-SHA256(content key, info = b"veil/v1/envelope-mac").

In image files the envelope travels in a PNG chunk ``veIL`` (before IEND; not "safe to
copy", so an editor that changes the pixels drops it), in JPEG APP11 segments (data =
``b"VEIL\\0"``, u16 big-endian sequence number from 1, u16 count, then up to 65524 bytes
of envelope), or in a WebP RIFF chunk ``VEIL`` (after all others; a simple WebP file
first gains a VP8X header).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import ArrayLike, NDArray

from cipher_worker.errors import BadInput, EnvelopeError, EnvelopeTampered, NoEnvelope

VERSION = 2
READABLE_VERSIONS = (1, 2)
MAGIC = b"VEIL"
MAC_BYTES = 32
FINGERPRINT_BYTES = 16
NONCE_BYTES = 16

Fidelity = Literal["exact", "latent"]
_FIDELITY_CODES: dict[str, int] = {"exact": 0, "latent": 1}
_FIDELITY_NAMES: dict[int, Fidelity] = {0: "exact", 1: "latent"}
_DTYPE_CODES = {"<f8": 1, "<f4": 2, "<u4": 3}
_MAC_INFO = b"veil/v1/envelope-mac"
_TAMPERED = "the photo's recovery data has been altered"
_MAX_MASK_SIDE = 1024


@dataclass(frozen=True, eq=False)
class FaceRecord:
    """One anonymized face.

    ``transform`` (2, 3) f8 maps image coords to canonical crop coords; ``box`` (x0, y0, x1, y1)
    is the image region the composite touches; ``mask`` is the composite's weight raster over
    the crop, (M, M) uint8 with 255 = the stranger only (version 2), or a feathered ellipse's
    parameters (version 1); ``attributes`` (k,) f4 is the attribute latent; ``identity`` (d,) u4
    the encrypted identity, made with candidate pad ``candidate``; ``skin`` the original face's
    Lab mean and spread (6,) f4, or empty; ``pixels`` the AES-GCM ciphertext of the original
    ``box`` pixels (fidelity ``exact``) or None.
    """

    transform: NDArray[np.float64]
    box: tuple[int, int, int, int]
    mask: NDArray[np.uint8] | tuple[float, ...]
    attributes: NDArray[np.float32]
    identity: NDArray[np.uint32]
    pixels: bytes | None = None
    candidate: int = 0
    skin: NDArray[np.float32] = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
    # the raster's stored (zlib) form, kept as read: the MAC covers these bytes, and another zlib
    # build could compress the same raster differently
    mask_blob: bytes = dataclasses.field(default=b"", repr=False)

    def __post_init__(self) -> None:
        transform = _frozen_array(self.transform, np.float64, "transform")
        if transform.shape != (2, 3):
            raise EnvelopeError(f"a face's transform must have shape (2, 3), not {transform.shape}")
        box = tuple(int(v) for v in self.box)
        if len(box) != 4 or not all(-(2**31) <= v < 2**31 for v in box):
            raise EnvelopeError("a face's box must be four 32-bit integers (x0, y0, x1, y1)")
        attributes = _frozen_array(self.attributes, np.float32, "attribute latent")
        identity = _frozen_array(self.identity, np.uint32, "identity")
        skin = _frozen_array(self.skin, np.float32, "skin colour")
        if attributes.ndim != 1 or identity.ndim != 1:
            raise EnvelopeError("a face's attribute latent and identity must be vectors")
        if skin.shape not in ((0,), (6,)):
            raise EnvelopeError("a face's skin colour must be empty or 6 values")
        if self.pixels is not None and not isinstance(self.pixels, bytes):
            raise EnvelopeError("a face's stored pixels must be bytes or None")
        if not 0 <= int(self.candidate) < 2**16:
            raise EnvelopeError("a face's candidate pad index must fit in 16 bits")
        mask: NDArray[np.uint8] | tuple[float, ...]
        if isinstance(self.mask, np.ndarray):
            raster = _frozen_array(self.mask, np.uint8, "mask")
            if raster.ndim != 2 or raster.shape[0] != raster.shape[1] or not 0 < raster.shape[0] <= _MAX_MASK_SIDE:
                raise EnvelopeError(f"a face's mask must be a square raster of at most {_MAX_MASK_SIDE} px")
            if not self.mask_blob:
                object.__setattr__(self, "mask_blob", zlib.compress(raster.tobytes(), 9))
            mask = raster.astype(np.uint8, copy=False)
        else:
            mask = tuple(float(v) for v in self.mask)
            if self.mask_blob:
                raise EnvelopeError("an ellipse mask has no raster")
        object.__setattr__(self, "transform", transform)
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "attributes", attributes)
        object.__setattr__(self, "identity", identity)
        object.__setattr__(self, "candidate", int(self.candidate))
        object.__setattr__(self, "skin", skin)

    def _encode(self, out: _Writer, version: int) -> None:
        out.array(self.transform.reshape(6), "<f8")
        out.pack("<4i", *self.box)
        if version == 1:
            if isinstance(self.mask, np.ndarray) or self.candidate or self.skin.size:
                raise EnvelopeError("version 1 recovery data holds only an ellipse mask and candidate pad 0")
            out.array(np.asarray(self.mask, dtype=np.float64), "<f8")
        else:
            if not isinstance(self.mask, np.ndarray):
                raise EnvelopeError("version 2 recovery data holds a raster mask")
            out.pack("<H", self.mask.shape[0])
            out.blob(self.mask_blob, "<I", "a face's mask")
        out.array(self.attributes, "<f4")
        out.array(self.identity, "<u4")
        if version >= 2:
            out.pack("<H", self.candidate)
            out.array(self.skin, "<f4")
        if self.pixels is None:
            out.pack("<B", 0)
        else:
            out.pack("<B", 1)
            out.blob(self.pixels, "<I", "a face's stored pixels")

    @classmethod
    def _decode(cls, src: _Reader, version: int) -> FaceRecord:
        transform = src.array("<f8", "transform")
        if transform.size != 6:
            raise EnvelopeError("the photo's recovery data is corrupted: a face transform is not 2×3")
        x0, y0, x1, y1 = src.unpack("<4i")
        mask: NDArray[np.uint8] | tuple[float, ...]
        blob = b""
        if version == 1:
            mask = tuple(float(v) for v in src.array("<f8", "mask"))
        else:
            side = src.unpack("<H")[0]
            blob = src.blob("<I")
            mask = _inflate_mask(side, blob)
        attributes = src.array("<f4", "attribute latent")
        identity = src.array("<u4", "identity")
        candidate, skin = 0, np.zeros(0, np.float32)
        if version >= 2:
            candidate = src.unpack("<H")[0]
            skin = src.array("<f4", "skin colour")
        flag = src.unpack("<B")[0]
        if flag not in (0, 1):
            raise EnvelopeError("the photo's recovery data is corrupted: a face's pixel flag is invalid")
        pixels = src.blob("<I") if flag else None
        return cls(transform.reshape(2, 3), (x0, y0, x1, y1), mask, attributes, identity, pixels, candidate, skin, blob)

    def _key(self) -> bytes:
        out = _Writer()
        self._encode(out, 1 if isinstance(self.mask, tuple) else VERSION)
        return out.getvalue()

    def __eq__(self, other: object) -> bool:
        # Bitwise equality: the envelope must round-trip exactly, NaN payloads and -0.0 included.
        if not isinstance(other, FaceRecord):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


@dataclass(frozen=True, kw_only=True)
class Envelope:
    """A photo's recovery data; ``mac`` is empty until :func:`seal_envelope` sets its 32 bytes.

    ``codec_fingerprint`` and ``nonce`` are 16 bytes; ``image_size`` is (width, height) in pixels.
    """

    version: int = VERSION
    codec_id: str
    codec_fingerprint: bytes
    fidelity: Fidelity
    sealed_content_key: bytes
    nonce: bytes
    image_size: tuple[int, int]
    faces: tuple[FaceRecord, ...]
    mac: bytes = b""

    def __post_init__(self) -> None:
        if self.version not in READABLE_VERSIONS:
            raise EnvelopeError(f"this Veil reads recovery data of versions {READABLE_VERSIONS}, not {self.version}")
        if self.fidelity not in _FIDELITY_CODES:
            raise EnvelopeError(f"the fidelity must be 'exact' or 'latent', not {self.fidelity!r}")
        for value, size, what in (
            (self.codec_fingerprint, FINGERPRINT_BYTES, "codec fingerprint"),
            (self.nonce, NONCE_BYTES, "photo nonce"),
            (self.mac or bytes(MAC_BYTES), MAC_BYTES, "MAC"),  # empty: not sealed yet
        ):
            if not isinstance(value, bytes) or len(value) != size:
                raise EnvelopeError(f"the envelope's {what} must be {size} bytes long")
        image_size = tuple(int(v) for v in self.image_size)
        if len(image_size) != 2 or not all(0 < v < 2**32 for v in image_size):
            raise EnvelopeError("the envelope's image size must be a positive (width, height)")
        faces = tuple(self.faces)
        if not all(isinstance(face, FaceRecord) for face in faces):
            raise EnvelopeError("the envelope's faces must be FaceRecord objects")
        object.__setattr__(self, "image_size", image_size)
        object.__setattr__(self, "faces", faces)

    def unsigned_bytes(self) -> bytes:
        """The canonical encoding of every field except ``mac``: what the MAC authenticates."""
        out = _Writer()
        out.raw(MAGIC)
        out.pack("<B", self.version)
        out.blob(self.codec_id.encode("utf-8"), "<H", "the codec id")
        out.raw(self.codec_fingerprint)
        out.pack("<B", _FIDELITY_CODES[self.fidelity])
        out.blob(self.sealed_content_key, "<H", "the sealed content key")
        out.raw(self.nonce)
        out.pack("<II", *self.image_size)
        if len(self.faces) > 0xFFFF:
            raise EnvelopeError("a photo cannot carry more than 65535 faces")
        out.pack("<H", len(self.faces))
        for face in self.faces:
            face._encode(out, self.version)
        return out.getvalue()

    def to_bytes(self) -> bytes:
        """The envelope in the binary format of the module docstring; it must be sealed first."""
        if not self.mac:
            raise EnvelopeError("the recovery data must be sealed before it is stored")
        return self.unsigned_bytes() + self.mac

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        """Parse :meth:`to_bytes` output; raises EnvelopeError for anything else."""
        src = _Reader(bytes(data))
        if src.take(min(len(data), 4)) != MAGIC:
            raise EnvelopeError("this is not Veil recovery data")
        version = src.unpack("<B")[0]
        if version not in READABLE_VERSIONS:
            newer = f"the photo's recovery data has version {version}, which this Veil cannot read"
            raise EnvelopeError(newer)
        try:
            codec_id = src.blob("<H").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvelopeError("the photo's recovery data is corrupted: its codec id is not text") from exc
        fingerprint = src.take(FINGERPRINT_BYTES)
        fidelity_code = src.unpack("<B")[0]
        fidelity = _FIDELITY_NAMES.get(fidelity_code)
        if fidelity is None:
            raise EnvelopeError("the photo's recovery data is corrupted: its fidelity mode is unknown")
        sealed_content_key = src.blob("<H")
        nonce = src.take(NONCE_BYTES)
        width, height = src.unpack("<II")
        faces = tuple(FaceRecord._decode(src, version) for _ in range(src.unpack("<H")[0]))
        mac = src.take(MAC_BYTES)
        if not src.at_end():
            raise EnvelopeError("the photo's recovery data has unexpected bytes at its end")
        return cls(
            version=version,
            codec_id=codec_id,
            codec_fingerprint=fingerprint,
            fidelity=fidelity,
            sealed_content_key=sealed_content_key,
            nonce=nonce,
            image_size=(width, height),
            faces=faces,
            mac=mac,
        )


def seal_envelope(unsigned_envelope: Envelope, content_key: bytes) -> Envelope:
    """A copy of the envelope whose ``mac`` authenticates all its other fields under ``content_key``."""
    return dataclasses.replace(unsigned_envelope, mac=_envelope_mac(unsigned_envelope, content_key))


def verify_envelope(env: Envelope, content_key: bytes) -> None:
    """Raise EnvelopeTampered unless ``env.mac`` matches its fields under ``content_key``."""
    if not hmac.compare_digest(env.mac, _envelope_mac(env, content_key)):
        raise EnvelopeTampered(_TAMPERED)


def _envelope_mac(env: Envelope, content_key: bytes) -> bytes:
    if len(content_key) != 32:
        raise BadInput("a content key must be 32 bytes long")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_MAC_INFO).derive(content_key)
    return hmac.new(key, env.unsigned_bytes(), hashlib.sha256).digest()


_PIXELS_HEADER = struct.Struct("<III")  # height, width, channels
_GCM_NONCE = 12
_MAX_FACE_PIXELS = 2**28  # bytes of one face region (h × w × c); far above any real face


def seal_face_pixels(region_key: bytes, pixels: NDArray[np.uint8], aad: bytes) -> bytes:
    """Encrypt a face region ``pixels`` (h, w, 3 or 4) uint8: zlib-compressed, AES-256-GCM, ``aad`` bound.

    Returns nonce (12) | ciphertext + tag of zlib(u32 h | u32 w | u32 channels | pixels).
    """
    _check_region_key(region_key)
    arr = np.asarray(pixels)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.size == 0:
        raise BadInput(f"face pixels must be an (h, w, 3 or 4) uint8 array, not {arr.dtype} {arr.shape}")
    if arr.size > _MAX_FACE_PIXELS:
        raise BadInput("the face region is too large to store")
    # level 1: half the time of level 6 on photo pixels for about 3% more bytes
    plain = zlib.compress(_PIXELS_HEADER.pack(*arr.shape) + arr.tobytes(), 1)
    nonce = os.urandom(_GCM_NONCE)
    return nonce + AESGCM(region_key).encrypt(nonce, plain, aad)


def open_face_pixels(region_key: bytes, blob: bytes, aad: bytes) -> NDArray[np.uint8]:
    """Decrypt :func:`seal_face_pixels` output to the (h, w, c) uint8 region; EnvelopeTampered if altered."""
    _check_region_key(region_key)
    try:
        plain = AESGCM(region_key).decrypt(blob[:_GCM_NONCE], blob[_GCM_NONCE:], aad)
    except (InvalidTag, ValueError) as exc:
        raise EnvelopeTampered("the stored pixels of a face have been altered") from exc
    # Authentic yet undecodable data means a bug or a forger holding the key: still no crash.
    damaged = "the stored pixels of a face are damaged"
    try:
        inflater = zlib.decompressobj()
        header = inflater.decompress(plain, _PIXELS_HEADER.size)
        if len(header) != _PIXELS_HEADER.size:
            raise EnvelopeError(damaged)
        height, width, channels = _PIXELS_HEADER.unpack(header)
        size = height * width * channels
        if size == 0 or size > _MAX_FACE_PIXELS or channels not in (3, 4):
            raise EnvelopeError(damaged)
        body = inflater.decompress(inflater.unconsumed_tail, size + 1)
    except zlib.error as exc:
        raise EnvelopeError(damaged) from exc
    if len(body) != size or not inflater.eof or inflater.unconsumed_tail:
        raise EnvelopeError(damaged)
    return np.frombuffer(body, dtype=np.uint8).reshape(height, width, channels).copy()


def _inflate_mask(side: int, blob: bytes) -> NDArray[np.uint8]:
    damaged = "the photo's recovery data is corrupted: a face's mask is damaged"
    if not 0 < side <= _MAX_MASK_SIDE:
        raise EnvelopeError(damaged)
    try:
        inflater = zlib.decompressobj()
        body = inflater.decompress(blob, side * side + 1)
    except zlib.error as exc:
        raise EnvelopeError(damaged) from exc
    if len(body) != side * side or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise EnvelopeError(damaged)
    return np.frombuffer(body, dtype=np.uint8).reshape(side, side)


def _check_region_key(region_key: bytes) -> None:
    if len(region_key) != 32:
        raise BadInput("a face region key must be 32 bytes long")


# --- embedding in image files ------------------------------------------------------------


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


# --- binary encoding helpers ---------------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def raw(self, data: bytes) -> None:
        self._parts.append(data)

    def pack(self, fmt: str, *values: int) -> None:
        self._parts.append(struct.pack(fmt, *values))

    def blob(self, data: bytes, length_fmt: str, what: str) -> None:
        if len(data) >= 1 << (8 * struct.calcsize(length_fmt)):
            raise EnvelopeError(f"{what} is too long to store in the photo's recovery data")
        self.pack(length_fmt, len(data))
        self.raw(data)

    def array(self, values: NDArray[np.generic], dtype: str) -> None:
        self.pack("<BI", _DTYPE_CODES[dtype], values.size)
        self.raw(np.ascontiguousarray(values, dtype=dtype).tobytes())

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class _Reader:
    """Reads the envelope format; every shortfall is an EnvelopeError, never an IndexError."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def take(self, n: int) -> bytes:
        if self._pos + n > len(self._data):
            raise EnvelopeError("the photo's recovery data is truncated")
        self._pos += n
        return self._data[self._pos - n : self._pos]

    def unpack(self, fmt: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def blob(self, length_fmt: str) -> bytes:
        return self.take(self.unpack(length_fmt)[0])

    def array(self, dtype: str, what: str) -> NDArray[Any]:
        code, count = self.unpack("<BI")
        if code != _DTYPE_CODES[dtype]:
            raise EnvelopeError(f"the photo's recovery data is corrupted: a face's {what} has the wrong type")
        itemsize = np.dtype(dtype).itemsize
        return np.frombuffer(self.take(count * itemsize), dtype=dtype).astype(dtype[1:])

    def at_end(self) -> bool:
        return self._pos == len(self._data)


def _frozen_array(values: ArrayLike, dtype: type[np.generic], what: str) -> NDArray[np.generic]:
    """A read-only copy of ``values`` as ``dtype``, refusing casts that would change values."""
    arr = np.asarray(values)
    target = np.dtype(dtype)
    # Float latents may narrow to float32 (the stored precision); integers must fit exactly.
    allowed = np.can_cast(arr.dtype, target, "safe") or (target == np.float32 and arr.dtype.kind == "f")
    if not allowed:
        raise EnvelopeError(f"a face's {what} must hold {target} values, not {arr.dtype}")
    arr = arr.astype(target, copy=True)
    arr.flags.writeable = False
    return arr
