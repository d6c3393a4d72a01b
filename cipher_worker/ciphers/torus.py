"""The torus cipher (:mod:`cipher_worker.cipher`) behind the cipher interface: Veil's default.

Its password form is the face's pad, derived exactly as before (``cipher.derive_pad``), so
every envelope made before the interface existed decrypts as it did, bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .. import cipher
from .base import NO_WEIGHTS, Cipher, FaceSecret, KeyAlgebra, Role, StoredDtype

TORUS_ID = "torus"


class TorusCipher(Cipher):
    """``u′ = floor(Φ(x)·2³²) + δ mod 2³²`` with a per-face pad ``δ``; exact, a group."""

    id = TORUS_ID
    fingerprint = NO_WEIGHTS
    algebra: KeyAlgebra = "exact-group"
    stored_dtype: StoredDtype = "<u4"

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def passwords(self, secrets: Sequence[FaceSecret], *, role: Role = "encrypt") -> NDArray[np.uint32]:
        # the same pad both ways: decryption subtracts it
        pads = [cipher.derive_pad(s.content_key, s.nonce, s.face_index, self.dim, s.candidate) for s in secrets]
        return np.stack([p.values for p in pads]) if pads else np.zeros((0, self.dim), np.uint32)

    def encrypt(self, identity: NDArray[np.float64], passwords: NDArray[Any]) -> NDArray[np.uint32]:
        u = cipher.to_torus(identity)
        rows = [cipher.encrypt(u[i], cipher.FacePad(p)) for i, p in enumerate(passwords)]
        return np.array(rows, np.uint32).reshape(u.shape)

    def decrypt(self, stored: NDArray[Any], passwords: NDArray[Any]) -> NDArray[np.float64]:
        rows = [cipher.decrypt(stored[i], cipher.FacePad(p)) for i, p in enumerate(passwords)]
        return cipher.from_torus(np.array(rows, np.uint32).reshape(np.shape(stored)))

    def latent(self, stored: NDArray[Any]) -> NDArray[np.float64]:
        return cipher.from_torus(stored)

    def store(self, identity: NDArray[np.float64]) -> NDArray[np.uint32]:
        return cipher.to_torus(identity)  # to_torus(from_torus(u)) == u for every u

    def combine(self, first: NDArray[Any], second: NDArray[Any]) -> NDArray[np.uint32]:
        pairs = zip(first, second, strict=True)
        return np.array([cipher.combine(cipher.FacePad(a), cipher.FacePad(b)).values for a, b in pairs], np.uint32)
