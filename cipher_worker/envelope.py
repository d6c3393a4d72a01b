"""The recovery envelope of a photo: what a key holder needs to bring its faces back.

Binary format, version 3 (``Envelope.to_bytes``; versions 1 and 2 are still read); integers
are little-endian:

============================  ==========================================================
field                         encoding
============================  ==========================================================
magic                         4 bytes ``b"VEIL"``
version                       u8: 3 (2: before the cipher was named, 1: before face-shaped masks)
codec_id                      u16 length + UTF-8 text
codec_fingerprint             16 bytes
cipher_id                     v3 only: u16 length + UTF-8 text (``torus``, ``ifadit``, …)
cipher_fingerprint            v3 only: 16 bytes naming the cipher's weights (zeros: none)
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
  identity                    the encrypted identity as the cipher stores it: array of u4
                              (torus: u'; the only form before v3) or, v3, of f8 (a learned
                              cipher's output) or of u1 (a pixel cipher's anonymized crop,
                              S·S·3 values row-major: FIT)
  candidate                   v2 only: u16, which of the face's candidate pads made u'
  skin                        v2 only: array of f4, empty or the original's inner-face Lab
                              mean and spread (6 values; latent recovery matches them)
  pixels                      u8 flag: 0 = none; 1 = then u32 length + bytes
mac                           32 bytes: HMAC-SHA256 of every byte before it
============================  ==========================================================

An array is a u8 dtype code (1 = f8, 2 = f4, 3 = u4, 4 = u1), a u32 element count and the
elements (code 4 came with FIT inside version 3: the layout did not change, so envelopes
that do not use it read as before). An envelope before version 3 was made by the torus cipher (which has no
weights): reading one gives ``cipher_id`` ``torus`` and a zero fingerprint. Every envelope
has exactly one encoding, so parsing and re-encoding gives the
same bytes; the MAC key is HKDF-SHA256(content key, info = b"veil/v1/envelope-mac").

How an envelope travels inside a JPEG, PNG or WebP file: :mod:`cipher_worker.carriers`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import ArrayLike, NDArray

from cipher_worker.binfmt import Reader, Writer
from cipher_worker.errors import BadInput, EnvelopeError, EnvelopeTampered

VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
MAGIC = b"VEIL"
MAC_BYTES = 32
FINGERPRINT_BYTES = 16
NONCE_BYTES = 16

Fidelity = Literal["exact", "latent"]
_FIDELITY_CODES: dict[str, int] = {"exact": 0, "latent": 1}
_FIDELITY_NAMES: dict[int, Fidelity] = {0: "exact", 1: "latent"}
_MAC_INFO = b"veil/v1/envelope-mac"
_TAMPERED = "the photo's recovery data has been altered"
_MAX_MASK_SIDE = 1024
# what every envelope before version 3 was made with: the torus cipher, which has no weights
IMPLIED_CIPHER_ID = "torus"
IMPLIED_CIPHER_FINGERPRINT = bytes(FINGERPRINT_BYTES)
_IDENTITY_DTYPES = {np.dtype(np.uint32): "<u4", np.dtype(np.float64): "<f8", np.dtype(np.uint8): "|u1"}


@dataclass(frozen=True, eq=False)
class FaceRecord:
    """One anonymized face.

    ``transform`` (2, 3) f8 maps image coords to canonical crop coords; ``box`` (x0, y0, x1, y1)
    is the image region the composite touches; ``mask`` is the composite's weight raster over
    the crop, (M, M) uint8 with 255 = the stranger only (version 2), or a feathered ellipse's
    parameters (version 1); ``attributes`` (k,) f4 is the attribute latent; ``identity`` (d,) the
    encrypted identity as the envelope's cipher stores it (u4 for the torus cipher, f8 for a
    learned one, u1 for a pixel cipher's anonymized crop, flattened), made with candidate key
    ``candidate``; ``skin`` the original face's Lab mean and spread (6,) f4, or empty; ``pixels``
    the AES-GCM ciphertext of the original ``box`` pixels (fidelity ``exact``) or None.
    """

    transform: NDArray[np.float64]
    box: tuple[int, int, int, int]
    mask: NDArray[np.uint8] | tuple[float, ...]
    attributes: NDArray[np.float32]
    identity: NDArray[np.uint32] | NDArray[np.float64]
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
        given = np.asarray(self.identity).dtype
        kind: type[np.generic] = np.float64 if given.kind == "f" else np.uint8 if given == np.uint8 else np.uint32
        identity = _frozen_array(self.identity, kind, "identity")
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

    def _encode(self, out: Writer, version: int) -> None:
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
        if version < 3 and self.identity.dtype != np.uint32:
            raise EnvelopeError("recovery data before version 3 holds only the torus cipher's identities")
        out.array(self.identity, _IDENTITY_DTYPES[self.identity.dtype])
        if version >= 2:
            out.pack("<H", self.candidate)
            out.array(self.skin, "<f4")
        if self.pixels is None:
            out.pack("<B", 0)
        else:
            out.pack("<B", 1)
            out.blob(self.pixels, "<I", "a face's stored pixels")

    @classmethod
    def _decode(cls, src: Reader, version: int) -> FaceRecord:
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
        identity = src.array_of(("<u4", "<f8", "|u1") if version >= 3 else ("<u4",), "identity")
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
        out = Writer()
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

    ``codec_fingerprint``, ``cipher_fingerprint`` and ``nonce`` are 16 bytes (versions 1 and 2
    hold no cipher: it is the torus, :data:`IMPLIED_CIPHER_ID`); ``image_size`` is (width, height) in pixels.
    """

    version: int = VERSION
    codec_id: str
    codec_fingerprint: bytes
    cipher_id: str = IMPLIED_CIPHER_ID
    cipher_fingerprint: bytes = IMPLIED_CIPHER_FINGERPRINT
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
            (self.cipher_fingerprint, FINGERPRINT_BYTES, "cipher fingerprint"),
            (self.nonce, NONCE_BYTES, "photo nonce"),
            (self.mac or bytes(MAC_BYTES), MAC_BYTES, "MAC"),  # empty: not sealed yet
        ):
            if not isinstance(value, bytes) or len(value) != size:
                raise EnvelopeError(f"the envelope's {what} must be {size} bytes long")
        if not isinstance(self.cipher_id, str) or not self.cipher_id:
            raise EnvelopeError("the envelope's cipher id must be a non-empty text")
        if self.version < 3 and (self.cipher_id, self.cipher_fingerprint) != (
            IMPLIED_CIPHER_ID,
            IMPLIED_CIPHER_FINGERPRINT,
        ):
            raise EnvelopeError(f"version {self.version} recovery data holds only the torus cipher")
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
        out = Writer()
        out.raw(MAGIC)
        out.pack("<B", self.version)
        out.blob(self.codec_id.encode("utf-8"), "<H", "the codec id")
        out.raw(self.codec_fingerprint)
        if self.version >= 3:
            out.blob(self.cipher_id.encode("utf-8"), "<H", "the cipher id")
            out.raw(self.cipher_fingerprint)
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
        src = Reader(bytes(data))
        version, codec_id, fingerprint, cipher_id, cipher_fingerprint, fidelity, sealed_content_key = _head(src)
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
            cipher_id=cipher_id,
            cipher_fingerprint=cipher_fingerprint,
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


HEAD_BYTES = 1024
"""Every envelope's fields up to its sealed content key fit in its first this many bytes
(ids of a few dozen characters, a 92-byte sealed key): :func:`sealed_content_key_of` reads
no more, so an unlock need not load every photo's whole recovery data to open its key."""


def sealed_content_key_of(head: bytes) -> bytes:
    """The sealed content key of the envelope that starts with ``head`` (its first
    :data:`HEAD_BYTES`, or all of it); EnvelopeError if ``head`` does not start one."""
    return _head(Reader(bytes(head)))[-1]


def _head(src: Reader) -> tuple[int, str, bytes, str, bytes, Fidelity, bytes]:
    """magic … sealed_content_key (see the module docstring): version, codec id and
    fingerprint, cipher id and fingerprint, fidelity and the sealed content key."""
    if src.take(min(src.remaining(), 4)) != MAGIC:
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
    cipher_id, cipher_fingerprint = IMPLIED_CIPHER_ID, IMPLIED_CIPHER_FINGERPRINT
    if version >= 3:
        try:
            cipher_id = src.blob("<H").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvelopeError("the photo's recovery data is corrupted: its cipher id is not text") from exc
        cipher_fingerprint = src.take(FINGERPRINT_BYTES)
    fidelity = _FIDELITY_NAMES.get(src.unpack("<B")[0])
    if fidelity is None:
        raise EnvelopeError("the photo's recovery data is corrupted: its fidelity mode is unknown")
    return version, codec_id, fingerprint, cipher_id, cipher_fingerprint, fidelity, src.blob("<H")
