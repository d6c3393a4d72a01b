"""What the papers' learned ciphers share: a torch network on the identity coordinates, its
weights file (``lab.train cipher`` writes it), its fingerprint, and a float64 stored form
that *is* the stranger's identity (the envelope keeps the network's output as f8).

A subclass names its network (:attr:`LearnedCipher.net_type`, built from a frozen spec
dataclass :attr:`LearnedCipher.spec_type` with a ``dim`` field; ``net(x, password)`` encrypts,
``net.inverse(y, password)`` decrypts) and implements
:meth:`~cipher_worker.ciphers.base.Cipher.passwords`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from ..errors import BadCheckpoint, BadInput
from .base import Cipher, StoredDtype, state_fingerprint


class LearnedCipher(Cipher):
    title: ClassVar[str]  # the paper's spelling, for messages
    net_type: ClassVar[type[nn.Module]]
    spec_type: ClassVar[type]
    stored_dtype: StoredDtype = "<f8"

    def __init__(self, net: nn.Module) -> None:
        self.fingerprint = state_fingerprint(net.state_dict())  # of the weights as stored
        self.spec: Any = getattr(net, "spec")  # noqa: B009 (nn.Module's typing hides attributes)
        self.dim = self.spec.dim
        self.net = net.double().eval().requires_grad_(False)  # float64: the stored form is f8

    @classmethod
    def from_file(cls, path: Path, codec_id: str, dim: int) -> LearnedCipher:
        """The trained network in ``path`` (a ``lab.train cipher`` output) for a codec of id
        ``codec_id`` with ``dim`` identity coordinates."""
        if not path.is_file():
            raise BadInput(
                f"no {cls.title} weights for the {codec_id} codec ({path.name}); train them with "
                f"`make train-cipher NAME={cls.id}` (the dcgan64 codec's are committed)"
            )
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            spec = cls.spec_type(**checkpoint["spec"])
            net = cls.net_type(spec)
            net.load_state_dict(checkpoint["state"])
        except (KeyError, TypeError, RuntimeError, ValueError) as exc:
            raise BadCheckpoint(f"{path.name} is not an {cls.title} weights file: {exc}") from None
        if checkpoint.get("codec") != codec_id or spec.dim != dim:
            raise BadInput(
                f"{path.name} was trained for the {checkpoint.get('codec')} codec's {spec.dim} identity "
                f"coordinates, not {codec_id}'s {dim}"
            )
        return cls(net)

    def encrypt(self, identity: NDArray[np.float64], passwords: NDArray[Any]) -> NDArray[np.float64]:
        return self._run(self._forward, identity, passwords, "the identity latents")

    def decrypt(self, stored: NDArray[Any], passwords: NDArray[Any]) -> NDArray[np.float64]:
        return self._run(self.net.inverse, stored, passwords, "the encrypted identities")

    def _forward(self, x: torch.Tensor, passwords: torch.Tensor) -> torch.Tensor:
        return self.net(x, passwords)

    def latent(self, stored: NDArray[Any]) -> NDArray[np.float64]:
        return self._finite(stored, "the encrypted identities")

    def store(self, identity: NDArray[np.float64]) -> NDArray[np.float64]:
        return self._finite(identity, "the identity latents")

    def _finite(self, values: NDArray[Any], what: str) -> NDArray[np.float64]:
        arr = np.asarray(values)
        if arr.dtype.kind != "f":
            raise BadInput(f"the {self.title} cipher works on floating-point values; {what} are {arr.dtype}")
        arr = np.ascontiguousarray(arr, np.float64)
        if not np.isfinite(arr).all():
            raise BadInput(f"{what} contain NaN or infinite values")
        return arr

    def _run(self, net_call: Any, values: NDArray[Any], passwords: NDArray[Any], what: str) -> NDArray[np.float64]:
        """``net_call(values, passwords)`` on float64 tensors, without autograd, as numpy."""
        x = self._finite(values, what)
        with torch.inference_mode():
            return net_call(torch.from_numpy(x), torch.from_numpy(np.asarray(passwords, np.float64))).numpy()
