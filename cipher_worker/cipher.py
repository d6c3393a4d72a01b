"""The latent cipher: identity latents on the torus of 32-bit integers, and per-face pads.

An identity latent ``x ~ N(0, I)`` of dimension ``d`` maps to ``u = floor(Φ(x) · 2^32)``
(uint32, shape ``(..., d)``). A face's pad ``δ ∈ (Z/2^32)^d`` encrypts it as
``u' = u + δ (mod 2^32)``; ``x' = Φ⁻¹((u' + ½) / 2^32)`` is again a sample of ``N(0, I)``.
Pads form a group under addition mod 2^32, so sequential anonymization, any-order
decryption and combined keys are exact.

Pads and face-region keys come from HKDF-SHA256 over the photo's content key, with the
photo's nonce as salt and an ``info`` string naming the purpose, the format version and
the face index, so every face of every photo has an independent key.

Each face also has a family of *candidate* pads (candidate 0 is the face's pad of format
version 1). The pipeline renders the stranger of every candidate and keeps the one whose
gender and age read like the original's; the envelope records which (``docs/cipher.md``,
"Choosing the stranger"). The candidates ``u + δ_c`` are independent uniform draws whatever
``u`` is, so the one chosen, by what its render looks like, is still independent of ``u``.
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr, ndtri

from cipher_worker.errors import BadInput

CONTENT_KEY_BYTES = 32
NONCE_BYTES = 16
REGION_KEY_BYTES = 32
# HKDF-SHA256 yields at most 255 blocks of 32 bytes, i.e. 2040 uint32 values.
MAX_DIM = 255 * 32 // 4
MAX_CANDIDATES = 2**16  # the envelope stores the chosen candidate as a u16

_TWO32 = 2.0**32
_U32_MAX = 2**32 - 1
_HALF = 2**31

_PAD_INFO = b"veil/v1/face-pad/"
_REGION_INFO = b"veil/v1/face-region/"
_DECOY_INFO = b"veil/v1/decoy-content-key"

U32Array = NDArray[np.uint32]


def to_torus(x: ArrayLike) -> U32Array:
    """Map latents ``x`` (any shape, floats) to uint32 ``floor(Φ(x) · 2^32)`` of the same shape."""
    x = np.asarray(x, dtype=np.float64)
    if np.isnan(x).any():
        raise BadInput("the latent vector contains NaN values, so it cannot be encrypted")
    lower = np.floor(ndtr(x) * _TWO32)
    # For x > 0 work with the tail Φ(-x) = 1 - Φ(x), which float64 holds without cancellation.
    upper = _TWO32 - np.ceil(ndtr(-x) * _TWO32)
    u = np.where(x <= 0, lower, upper)
    return np.clip(u, 0, _U32_MAX).astype(np.uint32)


def from_torus(u: ArrayLike) -> NDArray[np.float64]:
    """Map uint32 ``u`` (any shape) to float64 latents ``Φ⁻¹((u + ½) / 2^32)`` of the same shape."""
    v = _as_u32(u, "torus values").astype(np.float64)
    low = v < _HALF
    # Mirror the upper half onto the lower one so that (v + ½) / 2^32 < ½ is exact in float64.
    tail = np.where(low, v, _U32_MAX - v)
    z = ndtri((tail + 0.5) / _TWO32)
    return np.where(low, z, -z)


@dataclass(frozen=True, eq=False)
class FacePad:
    """A face key: a pad ``δ`` of ``d`` uint32 values; ``+`` combines pads, ``-`` inverts one."""

    values: U32Array

    def __post_init__(self) -> None:
        values = _as_u32(self.values, "a face pad")
        if values.ndim != 1 or values.size == 0:
            raise BadInput(f"a face pad must be a non-empty vector, not an array of shape {values.shape}")
        values = values.copy()
        values.flags.writeable = False  # the dataclass is frozen, so its array is too
        object.__setattr__(self, "values", values)

    @property
    def dim(self) -> int:
        """The dimension ``d`` of the pad."""
        return int(self.values.shape[0])

    def __add__(self, other: FacePad) -> FacePad:
        if not isinstance(other, FacePad):
            return NotImplemented
        _check_dims(self.dim, other.dim)
        return FacePad(np.add(self.values, other.values, dtype=np.uint32))

    def __neg__(self) -> FacePad:
        return FacePad(np.subtract(np.uint32(0), self.values, dtype=np.uint32))

    def __sub__(self, other: FacePad) -> FacePad:
        return self + (-other)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FacePad):
            return NotImplemented
        return bool(np.array_equal(self.values, other.values))

    def __hash__(self) -> int:
        return hash(self.values.tobytes())

    def __repr__(self) -> str:
        return f"FacePad(dim={self.dim})"  # never print key material


@dataclass(frozen=True)
class FaceKeys:
    """The keys of one face: its identity ``pad`` and the AES-256-GCM ``region_key`` (32 bytes)."""

    pad: FacePad
    region_key: bytes

    def __repr__(self) -> str:
        return f"FaceKeys(pad={self.pad!r}, region_key=<hidden>)"


def derive_face_keys(content_key: bytes, nonce: bytes, face_index: int, dim: int, candidate: int = 0) -> FaceKeys:
    """Derive face ``face_index``'s pad (``dim`` uint32; candidate ``candidate``) and region key
    from a photo's key and nonce. The region key does not depend on the candidate."""
    return FaceKeys(
        derive_pad(content_key, nonce, face_index, dim, candidate), derive_region_key(content_key, nonce, face_index)
    )


def derive_region_key(content_key: bytes, nonce: bytes, face_index: int) -> bytes:
    """The region key alone of :func:`derive_face_keys`: what exact recovery needs (no pad, no codec)."""
    _check_len(content_key, CONTENT_KEY_BYTES, "content key")
    _check_len(nonce, NONCE_BYTES, "photo nonce")
    if face_index < 0:
        raise BadInput(f"a face index cannot be negative ({face_index})")
    return _hkdf(content_key, nonce, _REGION_INFO + str(face_index).encode("ascii"), REGION_KEY_BYTES)


def derive_pad(content_key: bytes, nonce: bytes, face_index: int, dim: int, candidate: int = 0) -> FacePad:
    """The pad alone of :func:`derive_face_keys`: what screening many candidates needs."""
    _check_len(content_key, CONTENT_KEY_BYTES, "content key")
    _check_len(nonce, NONCE_BYTES, "photo nonce")
    if face_index < 0:
        raise BadInput(f"a face index cannot be negative ({face_index})")
    if not 1 <= dim <= MAX_DIM:
        raise BadInput(f"a face pad must have between 1 and {MAX_DIM} values, not {dim}")
    if not 0 <= candidate < MAX_CANDIDATES:
        raise BadInput(f"a candidate pad index must be in [0, {MAX_CANDIDATES}), not {candidate}")
    index = str(face_index).encode("ascii")
    pad_info = _PAD_INFO + index + (b"/candidate/%d" % candidate if candidate else b"")
    pad_bytes = _hkdf(content_key, nonce, pad_info, 4 * dim)
    return FacePad(np.frombuffer(pad_bytes, dtype="<u4").astype(np.uint32))


def encrypt(u: ArrayLike, pad: FacePad) -> U32Array:
    """Encrypt identities ``u`` (uint32, shape ``(..., d)``): ``u + δ mod 2^32``."""
    return np.add(_check_identity(u, pad), pad.values, dtype=np.uint32)


def decrypt(u_enc: ArrayLike, pad: FacePad) -> U32Array:
    """Decrypt identities ``u'`` (uint32, shape ``(..., d)``): ``u' - δ mod 2^32``."""
    return np.subtract(_check_identity(u_enc, pad), pad.values, dtype=np.uint32)


def combine(*pads: FacePad) -> FacePad:
    """The single pad equivalent to applying all ``pads`` in turn (their sum mod 2^32)."""
    if not pads:
        raise BadInput("at least one face pad is needed to combine pads")
    total = pads[0]
    for pad in pads[1:]:
        total = total + pad
    return total


def random_content_key() -> bytes:
    """A fresh random 32-byte content key for one photo."""
    return os.urandom(CONTENT_KEY_BYTES)


def random_nonce() -> bytes:
    """A fresh random 16-byte photo nonce (the HKDF salt of its face keys)."""
    return os.urandom(NONCE_BYTES)


def decoy_content_key(password: str, salt: bytes) -> bytes:
    """A deterministic 32-byte content key from a wrong ``password``, to render plausible decoy faces.

    Not a password-hardening KDF: it protects nothing, it only makes the same wrong password
    show the same wrong faces.
    """
    digest = hashlib.sha256(unicodedata.normalize("NFC", password).encode("utf-8")).digest()
    return _hkdf(digest, salt, _DECOY_INFO, CONTENT_KEY_BYTES)


def _hkdf(key: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(key)


def _as_u32(u: Any, what: str) -> U32Array:
    """``u`` as a uint32 array, refusing values that are not integers in [0, 2^32)."""
    arr = np.asarray(u)
    if arr.dtype == np.uint32:
        return arr
    if arr.dtype.kind not in "iu":
        raise BadInput(f"expected {what} as 32-bit unsigned integers, not {arr.dtype} values")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > _U32_MAX):
        raise BadInput(f"some of {what} lie outside the range of 32-bit unsigned integers")
    return arr.astype(np.uint32)


def _check_identity(u: ArrayLike, pad: FacePad) -> U32Array:
    arr = _as_u32(u, "the identity values")
    if arr.ndim == 0:
        raise BadInput("an identity must be a vector, not a single number")
    _check_dims(int(arr.shape[-1]), pad.dim)
    return arr


def _check_dims(a: int, b: int) -> None:
    if a != b:
        raise BadInput(f"the identity and the face pad have different dimensions ({a} and {b})")


def _check_len(value: bytes, size: int, what: str) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != size:
        raise BadInput(f"a {what} must be {size} bytes long")
