"""FaceRSA's cipher: a password converter and a modulation module editing the identity latent
(:mod:`cipher_worker.ciphers.facersa_net`), trained data-free by ``python -m lab.train cipher
--name facersa``.

* **Password forms.** The paper's N-bit discrete password: :attr:`MapperSpec.bits` bits of
  HKDF over the face's secret (info ``veil/v3/facersa-password``), as a vector of ±1. The
  *decryption* password (``role="decrypt"``) is a different one, its negation, as FIT's
  inverse password: the converter has learned to map it to the edit that undoes the
  encryption password's. (Both come from the same per-face key, so holding one is holding
  the other: a worker that only anonymizes still never sees either, it draws fresh keys.)
* **Approximate recovery and key algebra.** Recovery, sequential anonymization, decryption in
  any order and the associated password hold as far as training's single, sequential and
  associated losses taught them (:data:`ROUND_TRIP_TOLERANCE`, measured on real photos).
* **Combined passwords** are the paper's: the sum ``e₁ + e₂`` encrypts as ``e₁`` then ``e₂``;
  the sum of the decryption passwords undoes both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .base import FaceSecret, KeyAlgebra, Role
from .facersa_net import MapperSpec, PasswordMapper
from .learned import LearnedCipher

FACERSA_ID = "facersa"
# max |x − decrypt(encrypt(x))| per coordinate, in prior units (~N(0, 1)): measured at most 0.011 on
# the bundled photos' identities, 0.031 on the worst of 192 held-out generator faces
ROUND_TRIP_TOLERANCE = 0.05
# max error per coordinate of two layers peeled off in either order, or by the combined decryption
# password, and of the combined encryption password against two layers: measured at most 0.096
SEQUENCE_TOLERANCE = 0.2
_PASSWORD_INFO = b"veil/v3/facersa-password"


class FaceRSACipher(LearnedCipher):
    id = FACERSA_ID
    title = "FaceRSA"
    net_type = PasswordMapper
    spec_type = MapperSpec
    algebra: KeyAlgebra = "learned-approximate"

    def passwords(self, secrets: Sequence[FaceSecret], *, role: Role = "encrypt") -> NDArray[np.float64]:
        bits = self.spec.bits
        raw = b"".join(s.derive(_PASSWORD_INFO, -(-bits // 8)) for s in secrets)
        unpacked = np.unpackbits(np.frombuffer(raw, np.uint8)).reshape(len(secrets), -1)[:, :bits]
        signs = unpacked.astype(np.float64) * 2 - 1
        return -signs if role == "decrypt" else signs

    def combine(self, first: NDArray[Any], second: NDArray[Any]) -> NDArray[np.float64]:
        return np.asarray(first, np.float64) + np.asarray(second, np.float64)  # the associated password
