"""iFADIT's cipher: a key-conditioned affine-coupling flow on the identity coordinates
(:mod:`cipher_worker.ciphers.ifadit_net`), trained data-free by ``python -m lab.train cipher
--name ifadit``.

* **Password form.** The paper's KeyGen reads ``Norm(KDF(s))``: here 32 bytes of HKDF over the
  face's secret (info ``veil/v3/ifadit-key``), each byte mapped to [−1, 1]. A candidate is
  another HKDF output, so the pipeline chooses among strangers exactly as with the torus.
* **Invertible by construction.** The flow runs in float64 and the envelope stores its output
  as float64, so decryption with the right key returns the encoded identity to float
  precision: :data:`ROUND_TRIP_TOLERANCE` (measured ≈ 1e-14). Exact fidelity restores the
  stored pixels as for any cipher, bit for bit.
* **Key algebra: none.** Only the key that encrypted decrypts; a wrong key decrypts to
  another face (training pushes it away from the original and keeps it inside the prior).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray

from .base import FaceSecret, KeyAlgebra, Role
from .ifadit_net import KEY_BYTES, FlowSpec, SecureIdentityFlow
from .learned import LearnedCipher

IFADIT_ID = "ifadit"
ROUND_TRIP_TOLERANCE = 1e-9  # max |x − decrypt(encrypt(x))| per coordinate, in prior units
_KEY_INFO = b"veil/v3/ifadit-key"


class IFADITCipher(LearnedCipher):
    id = IFADIT_ID
    title = "iFADIT"
    net_type = SecureIdentityFlow
    spec_type = FlowSpec
    algebra: KeyAlgebra = "none"

    def passwords(self, secrets: Sequence[FaceSecret], *, role: Role = "encrypt") -> NDArray[np.float64]:
        raw = b"".join(s.derive(_KEY_INFO, KEY_BYTES) for s in secrets)  # the same key both ways
        return np.frombuffer(raw, np.uint8).reshape(len(secrets), KEY_BYTES).astype(np.float64) / 127.5 - 1.0

    def _forward(self, x: torch.Tensor, passwords: torch.Tensor) -> torch.Tensor:
        return self.net(x, passwords)[0]  # the flow also gives its log-det
