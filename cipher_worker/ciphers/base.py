"""The cipher interface: a batch of identity coordinates and per-face keys in, encrypted
coordinates out, and back with the matching keys.

Every face's key material is a :class:`FaceSecret`: the photo's content key, its nonce, the
face index and a candidate index (:mod:`cipher_worker.strangers` picks among candidates and
the envelope records which). Keys, albums, key slots and envelopes know only that; each
cipher turns a secret into its own *password form* with HKDF under an ``info`` string of its
own (:meth:`Cipher.passwords`): the torus cipher's pad, iFADIT's KDF key, and later
RiDDLE's random-latent password, FaceRSA's discrete password (with a *different* form for
decryption: ``role="decrypt"``) or FIT's N-bit password and its inverse.

A cipher works on the codec's identity coordinates, ``(N, d)`` float64, ~N(0, I) under the
generator's prior, and returns what the envelope stores, ``(N, d)`` of
:attr:`Cipher.stored_dtype` (uint32 torus values, or float64 for a learned cipher);
:meth:`Cipher.latent` says what the generator draws from that stored form.

**Pixel-space ciphers (FIT).** FIT encrypts the aligned crop itself, not a latent. Such a
cipher sets :attr:`Cipher.space` to ``"pixels"`` and implements :meth:`Cipher.encrypt_crops`
/ :meth:`Cipher.decrypt_crops` ((N, S, S, 3) uint8 crops in and out); the pipeline then
skips the latent encrypt and render for it, composites the returned crop, and stores the
anonymized crop losslessly in the envelope in place of the identity (flattened, uint8:
:attr:`Cipher.stored_dtype` ``|u1``, :attr:`Cipher.dim` = S·S·3 values), so recovery never
depends on re-aligning the lossy output photo. The key plumbing (secrets, candidates, the
envelope's cipher id and fingerprint) stays as it is; only the stored array changes.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import NDArray

from ..errors import BadInput

KeyAlgebra = Literal["exact-group", "learned-approximate", "none"]
"""What keys compose into. ``exact-group``: sequential anonymization, any-order decryption and
combined keys are exact (:meth:`Cipher.combine`); ``learned-approximate``: they hold as far
as training taught them (FaceRSA); ``none``: only the one key that encrypted decrypts."""

Role = Literal["encrypt", "decrypt"]
Space = Literal["latent", "pixels"]
StoredDtype = Literal["<u4", "<f8", "|u1"]
FINGERPRINT_BYTES = 16
NO_WEIGHTS = bytes(FINGERPRINT_BYTES)  # the fingerprint of a cipher that has no weights (torus)


@dataclass(frozen=True)
class FaceSecret:
    """The key material of one face (one candidate of it): what every cipher derives its
    password form from. ``content_key`` 32 bytes, ``nonce`` 16 bytes."""

    content_key: bytes
    nonce: bytes
    face_index: int
    candidate: int = 0

    def derive(self, purpose: bytes, length: int) -> bytes:
        """``length`` bytes of HKDF-SHA256(content key, salt = nonce, info = ``purpose`` /face/
        candidate): one purpose (a cipher's id and format version) never sees another's bytes."""
        if len(self.content_key) != 32 or len(self.nonce) != 16:
            raise BadInput("a face secret needs a 32-byte content key and a 16-byte nonce")
        if self.face_index < 0 or self.candidate < 0:
            raise BadInput("a face index and a candidate index cannot be negative")
        info = purpose + b"/%d/candidate/%d" % (self.face_index, self.candidate)
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=self.nonce, info=info).derive(self.content_key)

    def __repr__(self) -> str:
        return f"FaceSecret(face={self.face_index}, candidate={self.candidate}, keys=<hidden>)"


class Cipher(ABC):
    """A keyed, invertible map on a codec's identity coordinates (``dim`` of them)."""

    id: str
    fingerprint: bytes  # 16 bytes naming the exact weights (NO_WEIGHTS for none); recovery refuses a mismatch
    algebra: KeyAlgebra
    stored_dtype: StoredDtype
    space: Space = "latent"
    dim: int

    @abstractmethod
    def passwords(self, secrets: Sequence[FaceSecret], *, role: Role = "encrypt") -> NDArray[Any]:
        """Each face's password form, stacked (N, p); ``role`` tells encryption passwords from
        decryption ones for ciphers whose two differ (FaceRSA, FIT)."""

    @abstractmethod
    def encrypt(self, identity: NDArray[np.float64], passwords: NDArray[Any]) -> NDArray[Any]:
        """(N, d) identity coordinates, (N, p) passwords → (N, d) stored form."""

    @abstractmethod
    def decrypt(self, stored: NDArray[Any], passwords: NDArray[Any]) -> NDArray[np.float64]:
        """(N, d) stored form, (N, p) decryption passwords → (N, d) identity coordinates."""

    @abstractmethod
    def latent(self, stored: NDArray[Any]) -> NDArray[np.float64]:
        """(N, d) stored form → (N, d) identity coordinates of the stranger it shows."""

    @abstractmethod
    def store(self, identity: NDArray[np.float64]) -> NDArray[Any]:
        """The inverse of :meth:`latent`: (N, d) coordinates → the stored form that shows them
        (how a layer of sequential anonymization is peeled off and decrypted again)."""

    def encrypt_crops(self, crops: NDArray[np.uint8], passwords: NDArray[Any]) -> NDArray[np.uint8]:
        """(N, S, S, 3) uint8 aligned crops, (N, p) passwords → (N, S, S, 3) uint8 anonymized
        crops; only pixel-space ciphers (:attr:`space` ``"pixels"``)."""
        raise BadInput(f"the {self.id} cipher works on identity coordinates, not on face crops")

    def decrypt_crops(self, crops: NDArray[np.uint8], passwords: NDArray[Any]) -> NDArray[np.uint8]:
        """(N, S, S, 3) uint8 anonymized crops, (N, p) decryption passwords → the recovered crops."""
        raise BadInput(f"the {self.id} cipher works on identity coordinates, not on face crops")

    def encrypt_crop_faces(self, crops: NDArray[np.uint8], secrets: Sequence[FaceSecret]) -> NDArray[np.uint8]:
        """:meth:`encrypt_crops` under each secret's encryption password."""
        return self.encrypt_crops(crops, self.passwords(secrets))

    def decrypt_crop_faces(self, crops: NDArray[np.uint8], secrets: Sequence[FaceSecret]) -> NDArray[np.uint8]:
        """:meth:`decrypt_crops` under each secret's decryption password."""
        return self.decrypt_crops(crops, self.passwords(secrets, role="decrypt"))

    def combine(self, first: NDArray[Any], second: NDArray[Any]) -> NDArray[Any]:
        """The one password equivalent to encrypting under ``first`` then ``second`` (both (N, p));
        only ciphers whose algebra has combined keys."""
        raise BadInput(f"the {self.id} cipher has no combined keys (its key algebra: {self.algebra})")

    def encrypt_faces(self, identity: NDArray[np.float64], secrets: Sequence[FaceSecret]) -> NDArray[Any]:
        """:meth:`encrypt` under each secret's encryption password."""
        return self.encrypt(self._batch(identity, secrets), self.passwords(secrets))

    def decrypt_faces(self, stored: NDArray[Any], secrets: Sequence[FaceSecret]) -> NDArray[np.float64]:
        """:meth:`decrypt` under each secret's decryption password."""
        return self.decrypt(self._batch(stored, secrets), self.passwords(secrets, role="decrypt"))

    def _batch(self, values: NDArray[Any], secrets: Sequence[FaceSecret]) -> NDArray[Any]:
        arr = np.asarray(values)
        if arr.ndim != 2 or arr.shape[1] != self.dim or len(arr) != len(secrets):
            raise BadInput(
                f"the {self.id} cipher takes ({len(secrets)}, {self.dim}) identities for {len(secrets)} keys, "
                f"not an array of shape {arr.shape}"
            )
        return arr


def state_fingerprint(state: Mapping[str, Any]) -> bytes:
    """16 bytes naming a network's exact weights: SHA-256 over each tensor's name, dtype,
    shape and bytes, in name order (the same however the file was written)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name]
        value = np.ascontiguousarray(tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else tensor)
        digest.update(name.encode() + b"\0" + str(value.dtype).encode() + str(value.shape).encode() + b"\0")
        digest.update(value.tobytes())
    return digest.digest()[:FINGERPRINT_BYTES]
