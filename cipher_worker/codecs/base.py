"""The codec interface: aligned face crops ↔ a latent split into identity and attributes.

Every stage outside ``codecs/`` sees only this interface, so a new generator (StyleGAN2,
…) slots in without touching detection, the cipher, the envelope or compositing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Latents:
    """A batch of N faces. ``identity``: (N, d) float64, ~N(0, I) under the codec's prior
    (the cipher acts on it); ``attributes``: (N, k) float32, kept in the clear (pose,
    expression, colours)."""

    identity: np.ndarray
    attributes: np.ndarray


class Codec(ABC):
    id: str
    fingerprint: bytes  # 16 bytes naming the exact weights; recovery refuses a mismatch
    crop_size: int
    template: np.ndarray  # (5, 2) landmark positions in crop pixels, YuNet order
    identity_dim: int
    attribute_dim: int
    # strangers per face to choose from (cipher_worker.strangers): ``candidates`` pads are drawn;
    # a codec that can foresee their looks (:meth:`foresee`) renders only the likeliest
    # ``finalists``, any other renders them all. A costly generator draws just the one.
    candidates: int = 1
    finalists: int = 1

    @abstractmethod
    def encode(self, crops: np.ndarray, landmarks: np.ndarray, expression: np.ndarray | None = None) -> Latents:
        """(N, S, S, 3) uint8 RGB crops, their (N, 5, 2) landmarks in crop pixels and (N, 5)
        expression measured by the dense mesh (:meth:`~cipher_worker.mesh.MeshResult.expression`;
        a codec may ignore what it does not need) → latents."""

    def for_fingerprint(self, fingerprint: bytes) -> Codec | None:
        """The codec that made envelopes of ``fingerprint`` (this one, or an earlier version of
        its files it still carries), or None."""
        return self if fingerprint == self.fingerprint else None

    def foresee(self, latents: Latents) -> np.ndarray | None:
        """(N, len(LOOKS)) what each latent's stranger will look like
        (:data:`~cipher_worker.codecs.appearance.LOOKS`), without rendering it; None when this
        codec cannot tell."""
        return None

    @abstractmethod
    def render(self, latents: Latents, *, typical: bool) -> np.ndarray:
        """Latents → (N, S, S, 3) uint8 RGB crops.

        ``typical`` renders an enciphered identity: the codec may apply a fixed invertible
        rescaling (truncation) so strangers look like typical faces. The real identity is
        rendered with ``typical=False``, as faithfully as the codec can."""
