"""RiDDLE's cipher: a lightweight transformer encryptor with cross-attention to a random-latent
password (:mod:`cipher_worker.ciphers.riddle_net`), trained data-free by ``python -m lab.train
cipher --name riddle``.

* **Password form.** The paper samples the password from the generator's latent prior; here
  it is that sample *derived* from the face's secret: HKDF bytes (info ``veil/v3/riddle-
  password``) read as uint32 and mapped through the inverse normal CDF,
  ``Φ⁻¹((u + ½)/2³²)`` (the torus cipher's own map), so each password is an exact N(0, I)
  draw of :attr:`EncryptorSpec.password_dim` coordinates. The same password decrypts.
* **Approximate recovery.** A decryptor network trained with the encryptor (the paper reuses
  the encryptor; see :mod:`~cipher_worker.ciphers.riddle_net`): decrypting with the right
  password returns the encoded identity up to a learned error (:data:`ROUND_TRIP_TOLERANCE`,
  measured on real photos), so a latent recovery is close to, not equal to, the codec's
  reconstruction. Exact fidelity restores the stored pixels bit for bit, as for any cipher.
* **Key algebra: none.** The paper has no sequential or combined passwords; a wrong password
  decrypts to another face.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from .. import cipher
from .base import FaceSecret, KeyAlgebra, Role
from .learned import LearnedCipher
from .riddle_net import EncryptorSpec, LatentEncryptor

RIDDLE_ID = "riddle"
# max |x − decrypt(encrypt(x))| per coordinate, in prior units (~N(0, 1)): measured at most 0.42 on
# the bundled photos' identities (RMS about 0.1); the worst of 192 held-out generator faces, 1.8
ROUND_TRIP_TOLERANCE = 1.0
_PASSWORD_INFO = b"veil/v3/riddle-password"
_BLOCK = 1024  # uint32s per HKDF call (HKDF-SHA256 gives at most 8,160 bytes at once)


def gaussian_password(secret: FaceSecret, purpose: bytes, size: int) -> NDArray[np.float64]:
    """(size,) exact N(0, 1) draws from the secret: HKDF uint32s through Φ⁻¹, block by block."""
    words = [
        np.frombuffer(secret.derive(purpose + b"/block/%d" % b, 4 * min(_BLOCK, size - b * _BLOCK)), "<u4")
        for b in range(-(-size // _BLOCK))
    ]
    return cipher.from_torus(np.concatenate(words))


class RiDDLECipher(LearnedCipher):
    id = RIDDLE_ID
    title = "RiDDLE"
    net_type = LatentEncryptor
    spec_type = EncryptorSpec
    algebra: KeyAlgebra = "none"

    def passwords(self, secrets: Sequence[FaceSecret], *, role: Role = "encrypt") -> NDArray[np.float64]:
        size = self.spec.password_dim
        rows = [gaussian_password(s, _PASSWORD_INFO, size) for s in secrets]  # the same password both ways
        return np.stack(rows) if rows else np.zeros((0, size))
