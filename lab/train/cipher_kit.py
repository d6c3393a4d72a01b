"""What every learned cipher's data-free training shares (``lab.train.cipher`` runs them):
the dcgan64 codec's split of z, SFace as a differentiable judge, a batch of judged faces, the
loss pieces, and the :class:`Objective` each cipher's training implements.

Faces are the generator's own samples, z ~ N(0, I), split into attribute and identity
coordinates by the codec's basis. A cosine's gradient vanishes where two vectors agree, and
every cipher here starts as the identity map, so the "must differ" terms also come as latent
distances hinged at what separates two independent prior samples (:func:`hinge_near`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cipher_worker.ciphers.base import state_fingerprint
from cipher_worker.codecs.dcgan64 import ATTRIBUTES_PATH, TRUNCATION
from cipher_worker.codecs.dcgan64_net import Z_DIM, DCGANGenerator, load_generator

SAME_PERSON = 0.363  # SFace's published threshold (lab.facemetrics)
# prior samples whose codes' moments the SFace phase holds to N(0, I): its own few faces give a
# covariance of rank < d, far from I whatever the cipher does
PRIOR_BATCH = 128
Losses = dict[str, Tensor]


class Split:
    """The dcgan64 codec's basis: z ↔ (attributes, identity) as torch ops."""

    def __init__(self) -> None:
        split = np.load(ATTRIBUTES_PATH)
        self.attribute_dim = int(split["attribute_dim"])
        self.basis = torch.from_numpy(split["basis"]).float()  # (100, 100) orthonormal
        self.template = split["template"].astype(np.float64)  # (5, 2) landmarks in the 64 px crop

    @property
    def identity_dim(self) -> int:
        return Z_DIM - self.attribute_dim

    def parts(self, z: Tensor) -> tuple[Tensor, Tensor]:
        coords = z @ self.basis
        return coords[:, : self.attribute_dim], coords[:, self.attribute_dim :]

    def z(self, attributes: Tensor, identity: Tensor) -> Tensor:
        return torch.cat([attributes, identity], 1) @ self.basis.T


@dataclass(frozen=True)
class CipherTrainConfig:
    seed: int = 0
    latent_steps: int = 2500  # phase A: latent stand-ins for the identity network
    latent_batch: int = 256
    sface_steps: int = 120  # phase B: through the generator and SFace
    sface_batch: int = 8
    lr: float = 3e-3
    finetune_lr: float = 2e-4
    eval_samples: int = 192
    ramp: float = 0.3  # of phase A, over which the objective's ramped terms rise to their weight
    weights: dict[str, float] = field(default_factory=dict)  # loss term → weight, over the objective's


class IdentityJudge(nn.Module):
    """(N, 3, 64, 64) renders in [−1, 1] → (N, 128) unit SFace features, differentiably."""

    def __init__(self, sface: nn.Module, template: np.ndarray) -> None:
        super().__init__()
        import cv2

        from .sface import SFACE_TEMPLATE

        matrix, _ = cv2.estimateAffinePartial2D(template.astype(np.float32), SFACE_TEMPLATE.astype(np.float32))
        self.matrix = matrix  # 64 px crop → 112 px SFace crop
        # affine_grid wants, per output pixel (normalised), where to read in the input (normalised)
        to_crop = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))
        out_norm = np.array([[2 / 112, 0, 1 / 112 - 1], [0, 2 / 112, 1 / 112 - 1], [0, 0, 1]])
        in_norm = np.array([[2 / 64, 0, 1 / 64 - 1], [0, 2 / 64, 1 / 64 - 1], [0, 0, 1]])
        theta = in_norm @ to_crop @ np.linalg.inv(out_norm)
        self.register_buffer("theta", torch.from_numpy(theta[:2]).float()[None])
        self.sface = sface

    def aligned(self, images: Tensor) -> Tensor:
        """(N, 3, 112, 112) in [0, 255], as OpenCV's alignCrop would cut them."""
        theta = self.theta.expand(len(images), 2, 3)  # type: ignore[operator]
        grid = F.affine_grid(theta, [len(images), 3, 112, 112], align_corners=False)
        return F.grid_sample((images + 1) * 127.5, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(self.sface(self.aligned(images)), dim=1)


def load_judge(split: Split, log: Callable[[str], None]) -> IdentityJudge | None:
    """SFace converted to torch, or None (logged) when it cannot be or does not match OpenCV's."""
    try:
        from .sface import check_against_opencv, load_sface

        judge = IdentityJudge(load_sface(), split.template)
    except ImportError as exc:
        log(f"SFace cannot be converted here ({exc}); training on the latent stand-in losses only")
        return None
    # the conversion must match OpenCV's SFace on what it will judge: aligned generator faces
    with torch.no_grad():
        images = load_generator()(torch.randn(8, Z_DIM, generator=torch.Generator().manual_seed(99)))
        crops = judge.aligned(images).round().clamp(0, 255).permute(0, 2, 3, 1).to(torch.uint8).numpy()
    agreement = check_against_opencv(judge.sface, np.ascontiguousarray(crops))
    log(f"converted SFace against OpenCV's on aligned generator faces: min cos {agreement:.4f}")
    if agreement < 0.999:
        log("the conversion does not match OpenCV's SFace; training on the latent stand-in losses only")
        return None
    return judge


def render(generator: DCGANGenerator, split: Split, attributes: Tensor, identity: Tensor, typical: bool) -> Tensor:
    """The codec's render: strangers ``typical`` (truncated, as the pipeline shows them)."""
    return generator(split.z(attributes, identity * (TRUNCATION if typical else 1.0)))


@dataclass
class JudgedFaces:
    """A batch of generator faces for the SFace phase: ``x`` (N, d) identities, ``attributes``,
    the original renders (N, 3, 64, 64) and their SFace features ``e`` (N, 128), no gradient."""

    x: Tensor
    attributes: Tensor
    original: Tensor
    e: Tensor
    generator: DCGANGenerator
    split: Split
    judge: IdentityJudge

    def show(self, identity: Tensor, typical: bool = True) -> Tensor:
        """The render of ``identity`` on these faces' attributes, differentiably."""
        return render(self.generator, self.split, self.attributes, identity, typical)

    def features(self, image: Tensor) -> Tensor:
        return self.judge(image)


class Objective(ABC):
    """One cipher's training: its network, its random passwords, its losses per phase.

    ``weights`` scale the loss terms by name (missing: 1), ``ramped`` ones rising at first;
    ``defaults`` are the cipher's own
    :class:`CipherTrainConfig` values (steps, batches)."""

    name: ClassVar[str]
    weights: ClassVar[dict[str, float]] = {}
    # terms whose weight rises from 0 over the first ``ramp`` of phase A: a cipher that must come
    # back learns to move away first (from the identity map every recovery term pulls it back)
    ramped: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, int | float]] = {}
    net: nn.Module

    @abstractmethod
    def __init__(self, dim: int, seed: int) -> None:
        """A fresh network for ``dim`` identity coordinates (``seed``: its fixed parts, if any)."""

    @abstractmethod
    def passwords(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` random passwords in the cipher's form: (encryption, decryption), each (n, p)."""

    def encrypt(self, x: Tensor, password: Tensor) -> Tensor:
        return self.net(x, password)

    def decrypt(self, y: Tensor, password: Tensor) -> Tensor:
        return self.net.inverse(y, password)  # type: ignore[operator]

    @abstractmethod
    def latent_losses(self, x: Tensor, gen: torch.Generator) -> Losses:
        """Phase A on (N, d) prior samples: latent stand-ins (cosines of identity coordinates) for SFace's."""

    @abstractmethod
    def sface_losses(self, faces: JudgedFaces, gen: torch.Generator) -> Losses:
        """Phase B through the generator and SFace."""

    def metrics(self, x: Tensor, gen: torch.Generator) -> dict[str, float]:
        """Held-out numbers of this cipher's own (no gradient)."""
        return {}


def hinge_cos(a: Tensor, b: Tensor) -> Tensor:
    """max(0, cos(a, b)) per row, averaged: the papers' "must differ" identity term."""
    return F.cosine_similarity(a, b, dim=1).clamp(min=0).mean()


def hinge_near(a: Tensor, b: Tensor) -> Tensor:
    """max(0, 1 − |a − b| / √(2d)): zero once ``a`` and ``b`` are as far apart as two independent
    prior samples. Unlike a cosine, its gradient does not vanish where a ≈ b, which is where
    every key starts (an untrained cipher ignores its key)."""
    return (1 - (a - b).norm(dim=1) / math.sqrt(2 * a.shape[1])).clamp(min=0).mean()


def recovery_error(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared latent error per coordinate: what a latent recovery's render depends on."""
    return (a - b).pow(2).mean()


def prior_moments(y: Tensor) -> Tensor:
    """How far a batch of (N, d) latents is from N(0, I) in its first two moments: |μ|² / d +
    ‖Σ − I‖²_F / d. What keeps a cipher that is no flow (no exact KL) inside the prior."""
    mean = y.mean(0)
    centred = y - mean
    cov = centred.T @ centred / (len(y) - 1)
    eye = torch.eye(y.shape[1], dtype=y.dtype)
    return (mean.pow(2).sum() + (cov - eye).pow(2).sum()) / y.shape[1]


def id_change(pairs: list[tuple[Tensor, Tensor]]) -> Tensor:
    """The mean :func:`hinge_cos` over (a, b) pairs of features that must not match."""
    return torch.stack([hinge_cos(a, b) for a, b in pairs]).mean()


def id_kept(a: Tensor, b: Tensor) -> Tensor:
    """1 − cos: the papers' identity recovery term."""
    return (1 - F.cosine_similarity(a, b, dim=1)).mean()


def show_losses(losses: Losses) -> str:
    """One log line's worth of loss values."""
    return " ".join(f"{k}={float(v.detach()):.4f}" for k, v in losses.items())


def save_weights(
    out: Path,
    spec: dict[str, Any],
    net: nn.Module,
    identity_loss: str,
    config: CipherTrainConfig,
    metrics: dict[str, float],
    log: Callable[[str], None],
) -> None:
    """The weights file every cipher's training writes: the network's spec and state, the codec,
    the identity loss it saw, its config and its held-out metrics; logged with its fingerprint."""
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "spec": spec,
        "codec": "dcgan64",
        "state": state,
        "identity_loss": identity_loss,
        "config": asdict(config),
        "metrics": metrics,
    }
    torch.save(checkpoint, out)
    log(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB, fingerprint {state_fingerprint(state).hex()[:12]})")
    log(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
