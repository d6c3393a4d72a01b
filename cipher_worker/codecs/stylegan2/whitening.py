"""PCA whitening of W, computed data-free from the generator's own mapping network.

The cipher wants identity coordinates distributed N(0, I). W is far from isotropic (its
spectrum spans orders of magnitude), so each identity layer's 512-d W vector is whitened:
x = Λ^-½ Vᵀ (w − μ), with μ, V, Λ the mean and eigen-decomposition of W over mapping
samples. The statistics are a function of the generator weights only, computed with a
fixed seed in float64, so every machine derives the same transform; they are cached next
to the checkpoint because 100k mapping passes take a few seconds on a CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from .checkpoint import write_atomically
from .generator import Generator

log = logging.getLogger(__name__)

SAMPLES = 100_000
SEED = 20_231_122
RECIPE = 1  # bump when the computation changes, so stale caches are recomputed
# floor on eigenvalues relative to the mean one: directions W never uses would otherwise be
# scaled up by ~10⁶ and let an encoder's off-manifold error dominate the identity vector
EIGEN_FLOOR = 1e-6


@dataclass(frozen=True)
class Whitening:
    mean: np.ndarray  # (d,) float64
    basis: np.ndarray  # (d, d) orthonormal eigenvectors, columns
    scale: np.ndarray  # (d,) √eigenvalue per column

    def whiten(self, w: np.ndarray) -> np.ndarray:
        """(…, d) W → (…, d) coordinates ~N(0, I)."""
        return ((w - self.mean) @ self.basis) / self.scale

    def unwhiten(self, x: np.ndarray) -> np.ndarray:
        return (x * self.scale) @ self.basis.T + self.mean


@torch.inference_mode()
def compute(generator: Generator, samples: int = SAMPLES, batch: int = 10_000) -> Whitening:
    """Mean and covariance of W = mapping(z), z ~ N(0, I), accumulated in float64."""
    dim = generator.spec.style_dim
    device = next(generator.parameters()).device
    rng = torch.Generator().manual_seed(SEED)
    total = np.zeros(dim)
    outer = np.zeros((dim, dim))
    for start in range(0, samples, batch):
        z = torch.randn(min(batch, samples - start), dim, generator=rng)
        w = generator.mapping(z.to(device)).double().cpu().numpy()
        total += w.sum(0)
        outer += w.T @ w
    mean = total / samples
    cov = outer / samples - np.outer(mean, mean)
    eigenvalues, basis = np.linalg.eigh((cov + cov.T) / 2)
    eigenvalues = np.maximum(eigenvalues, EIGEN_FLOOR * max(float(eigenvalues.mean()), 1e-30))
    return Whitening(mean=mean, basis=basis, scale=np.sqrt(eigenvalues))


def cached(generator: Generator, cache: Path | None, fingerprint: bytes) -> Whitening:
    """The whitening of ``generator``, read from ``cache`` when it was made for the same
    weights (``fingerprint``) and recipe, else computed and written there (best effort)."""
    if cache is not None and cache.is_file():
        try:
            with np.load(cache) as f:
                if bytes(f["fingerprint"]) == fingerprint and int(f["recipe"]) == RECIPE:
                    return Whitening(mean=f["mean"], basis=f["basis"], scale=f["scale"])
        except (OSError, ValueError, KeyError):
            log.warning("ignoring unreadable whitening cache %s", cache)
    log.info("computing W statistics from %d mapping-network samples (once per checkpoint)", SAMPLES)
    stats = compute(generator)
    if cache is not None:

        def save(fh: BinaryIO) -> None:
            tag = np.frombuffer(fingerprint, np.uint8)
            np.savez(fh, fingerprint=tag, recipe=RECIPE, mean=stats.mean, basis=stats.basis, scale=stats.scale)

        try:
            write_atomically(cache, save)  # concurrent workers never read half a file
        except OSError as exc:
            log.warning("could not cache W statistics at %s (%s); they will be recomputed next time", cache, exc)
    return stats
