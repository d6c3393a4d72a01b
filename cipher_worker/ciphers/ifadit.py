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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ..errors import BadCheckpoint, BadInput
from .base import Cipher, FaceSecret, KeyAlgebra, Role, StoredDtype, state_fingerprint
from .ifadit_net import KEY_BYTES, FlowSpec, SecureIdentityFlow

IFADIT_ID = "ifadit"
ROUND_TRIP_TOLERANCE = 1e-9  # max |x − decrypt(encrypt(x))| per coordinate, in prior units
_KEY_INFO = b"veil/v3/ifadit-key"


class IFADITCipher(Cipher):
    id = IFADIT_ID
    algebra: KeyAlgebra = "none"
    stored_dtype: StoredDtype = "<f8"

    def __init__(self, net: SecureIdentityFlow) -> None:
        self.fingerprint = state_fingerprint(net.state_dict())  # of the weights as stored
        self.dim = net.spec.dim
        self.net = net.double().eval().requires_grad_(False)

    @classmethod
    def from_file(cls, path: Path, codec_id: str, dim: int) -> IFADITCipher:
        """The trained flow in ``path`` (a ``lab.train cipher`` output) for a codec of id
        ``codec_id`` with ``dim`` identity coordinates."""
        if not path.is_file():
            raise BadInput(
                f"no iFADIT weights for the {codec_id} codec ({path.name}); train them with "
                f"`make train-cipher NAME=ifadit` (the dcgan64 codec's are committed)"
            )
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            spec = FlowSpec(**checkpoint["spec"])
            net = SecureIdentityFlow(spec)
            net.load_state_dict(checkpoint["state"])
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise BadCheckpoint(f"{path.name} is not an iFADIT weights file: {exc}") from None
        if checkpoint.get("codec") != codec_id or spec.dim != dim:
            raise BadInput(
                f"{path.name} was trained for the {checkpoint.get('codec')} codec's {spec.dim} identity "
                f"coordinates, not {codec_id}'s {dim}"
            )
        return cls(net)

    def passwords(self, secrets: Sequence[FaceSecret], *, role: Role = "encrypt") -> NDArray[np.float64]:
        raw = b"".join(s.derive(_KEY_INFO, KEY_BYTES) for s in secrets)  # the same key both ways
        return np.frombuffer(raw, np.uint8).reshape(len(secrets), KEY_BYTES).astype(np.float64) / 127.5 - 1.0

    def encrypt(self, identity: NDArray[np.float64], passwords: NDArray[Any]) -> NDArray[np.float64]:
        x = _finite(identity, "the identity latents")
        with torch.inference_mode():
            y, _ = self.net(torch.from_numpy(x), torch.from_numpy(np.asarray(passwords, np.float64)))
        return y.numpy()

    def decrypt(self, stored: NDArray[Any], passwords: NDArray[Any]) -> NDArray[np.float64]:
        y = _finite(stored, "the encrypted identities")
        with torch.inference_mode():
            return self.net.inverse(torch.from_numpy(y), torch.from_numpy(np.asarray(passwords, np.float64))).numpy()

    def latent(self, stored: NDArray[Any]) -> NDArray[np.float64]:
        return _finite(stored, "the encrypted identities")

    def store(self, identity: NDArray[np.float64]) -> NDArray[np.float64]:
        return _finite(identity, "the identity latents")


def _finite(values: NDArray[Any], what: str) -> NDArray[np.float64]:
    arr = np.asarray(values)
    if arr.dtype.kind != "f":
        raise BadInput(f"the iFADIT cipher works on floating-point values; {what} are {arr.dtype}")
    arr = np.ascontiguousarray(arr, np.float64)
    if not np.isfinite(arr).all():
        raise BadInput(f"{what} contain NaN or infinite values")
    return arr
