"""FIT's cipher: the password-conditioned face identity transformer
(:mod:`cipher_worker.ciphers.fit_net`) on the codec's aligned crops, in pixel space as the
paper has it; trained data-free by ``python -m lab.train cipher --name fit``.

* **Password forms.** The paper's N-bit password (:attr:`TransformerSpec.bits`: 32 for the
  committed, guided weights, 16 for the first ones): HKDF over the face's secret (info
  ``veil/v3/fit-password``) read as an integer ``p`` mod 2^N, its lowest bit set so that no
  password is its own inverse (which leaves 2^(N−1) of them). The *decryption* password
  (``role="decrypt"``) is the paper's inverse password ``−p mod 2^N``; both are returned as
  (N, bits) 0/1 bits, least significant first. The guided transformer depends on ``p`` only
  through what ``p`` and ``−p`` share, so either of them undoes an anonymization (both come
  from the face's secret).
* **Pixel space.** :meth:`encrypt_crops` maps (N, S, S, 3) uint8 crops to uint8 anonymized
  crops; the envelope stores the anonymized crop losslessly (flattened, S·S·3 uint8: the
  stored form, :attr:`dim` values) and recovery runs :meth:`decrypt_crops` on it, never on
  the lossy output photo. The latent methods refuse: this cipher has no identity coordinates.
* **The guided weights** keep the crop outside the face ellipse bit for bit and draw the face
  from those surroundings (the codec's stranger under the password, refined by the network), so
  nothing of the original face reaches the stranger; a recovery layer of at most 4 grey levels
  over it carries the original face (each 2×2 block's mean and detail). They run one crop at a
  time on whole grey levels, so that a batch never changes a cover's rounding.
* **Approximate recovery.** The inverse password brings the face back at 2×2 block resolution
  with its detail (:data:`ROUND_TRIP_TOLERANCE`, measured on real photos). A brute force over
  the password space can tell the right password (the stored crop lies within 4 grey levels of
  its cover only), so the 32 bits are what stand against it: 2^30 covers to draw (p odd, ±p
  alike), batched some hundred CPU-days here, far fewer on a GPU. Exact fidelity restores the
  stored pixels bit for bit, as for any cipher.
* **Key algebra: none.** The paper has no sequential or combined passwords; a wrong password
  draws another cover and anonymizes the stored crop again: another face.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from ..codecs.tensors import crops_to_tensor, tensor_to_crops
from ..errors import BadCheckpoint, BadInput
from .base import Cipher, FaceSecret, KeyAlgebra, Role, Space, StoredDtype, state_fingerprint
from .fit_net import FaceIdentityTransformer, TransformerSpec

FIT_ID = "fit"
# mean |original − recovered| per channel over a crop, in 0–255 units, with the right password:
# measured at most 4.5 (mean 3.1) on the bundled photos' 7 faces under 3 keys through the pipeline,
# 1.8 on average over 96 held-out generator faces (the weights file)
ROUND_TRIP_TOLERANCE = 5.0
_PASSWORD_INFO = b"veil/v3/fit-password"


class FITCipher(Cipher):
    id = FIT_ID
    title = "FIT"
    algebra: KeyAlgebra = "none"
    stored_dtype: StoredDtype = "|u1"
    space: Space = "pixels"

    def __init__(self, net: FaceIdentityTransformer) -> None:
        self.fingerprint = state_fingerprint(net.state_dict())
        self.spec = net.spec
        self.dim = self.spec.dim
        self.crop_size = self.spec.size
        self.net = net.float().eval().requires_grad_(False)

    @classmethod
    def from_file(cls, path: Path, codec_id: str, crop_size: int) -> FITCipher:
        """The trained transformer in ``path`` for a codec of id ``codec_id`` and ``crop_size`` px crops."""
        if not path.is_file():
            raise BadInput(
                f"no FIT weights for the {codec_id} codec ({path.name}); train them with "
                "`make train-cipher NAME=fit` (the dcgan64 codec's are committed)"
            )
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            net = FaceIdentityTransformer(TransformerSpec(**checkpoint["spec"]))
            net.load_state_dict(checkpoint["state"])
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise BadCheckpoint(f"{path.name} is not a FIT weights file: {exc}") from None
        if checkpoint.get("codec") != codec_id or net.spec.size != crop_size:
            raise BadInput(
                f"{path.name} was trained for the {checkpoint.get('codec')} codec's {net.spec.size} px crops, "
                f"not {codec_id}'s {crop_size} px"
            )
        return cls(net)

    def passwords(self, secrets: Sequence[FaceSecret], *, role: Role = "encrypt") -> NDArray[np.float64]:
        bits = self.spec.bits
        size = -(-bits // 8)
        p = np.array([int.from_bytes(s.derive(_PASSWORD_INFO, size), "little") for s in secrets], dtype=object)
        p = (p % (1 << bits)) | 1  # odd: never its own inverse
        if role == "decrypt":
            p = (-p) % (1 << bits)
        values = np.array([int(v) for v in p], dtype=np.uint64).reshape(-1, 1)
        return ((values >> np.arange(bits, dtype=np.uint64)) & 1).astype(np.float64)

    def encrypt_crops(self, crops: NDArray[np.uint8], passwords: NDArray[Any]) -> NDArray[np.uint8]:
        return self._transform(crops, passwords)

    def decrypt_crops(self, crops: NDArray[np.uint8], passwords: NDArray[Any]) -> NDArray[np.uint8]:
        return self._transform(crops, passwords)  # the same network: the inverse password undoes

    def _transform(self, crops: NDArray[np.uint8], passwords: NDArray[Any]) -> NDArray[np.uint8]:
        arr, bits = np.asarray(crops), np.asarray(passwords, np.float64)
        size = self.crop_size
        if arr.dtype != np.uint8 or arr.shape[1:] != (size, size, 3) or bits.shape != (len(arr), self.spec.bits):
            raise BadInput(
                f"the FIT cipher takes (N, {size}, {size}, 3) uint8 crops and (N, {self.spec.bits}) passwords, "
                f"not {arr.dtype} {arr.shape} and {bits.shape}"
            )
        if not len(arr):
            return arr.copy()
        with torch.inference_mode():
            bits_t = torch.from_numpy(bits).float()
            if self.spec.guided:  # whole grey levels in and out: its recovery layer needs them exact
                # one crop at a time: a batch's size must not change a cover's rounding
                levels = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()
                out = [self.net.transform_stored(levels[i : i + 1], bits_t[i : i + 1]) for i in range(len(arr))]
                return torch.cat(out).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
            out = self.net(crops_to_tensor(np.ascontiguousarray(arr), "cpu"), bits_t)
        return tensor_to_crops(out)

    def encrypt(self, identity: NDArray[np.float64], passwords: NDArray[Any]) -> NDArray[Any]:
        raise self._no_latent()

    def decrypt(self, stored: NDArray[Any], passwords: NDArray[Any]) -> NDArray[np.float64]:
        raise self._no_latent()

    def latent(self, stored: NDArray[Any]) -> NDArray[np.float64]:
        raise self._no_latent()

    def store(self, identity: NDArray[np.float64]) -> NDArray[Any]:
        raise self._no_latent()

    def _no_latent(self) -> BadInput:
        return BadInput("the FIT cipher works on aligned face crops, not identity coordinates")
