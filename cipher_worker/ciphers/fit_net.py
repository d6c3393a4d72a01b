"""FIT's face identity transformer (Gu et al., ECCV 2020, §4) as a torch module, at a CPU scale.

The paper's transformer ``T`` is a conditional image-to-image GAN generator: the password, an
N-bit string shifted to zero mean (``p − 0.5``), is tiled over the image and concatenated
with it depthwise, ``(I, p) ∈ R^{H×W×(3+N)}``; the same network anonymizes under ``p`` and
recovers under the inverse password ``−p mod 2^N``. Here, on the dcgan64 codec's 64 px
aligned crops:

* **encoder–decoder with skips** (a small U-Net): a stride-2 4×4 convolution from the
  depthwise concatenation to 32 px, two more to 16 and 8 px, ``blocks`` residual blocks at 8
  px, and nearest upsampling with 3×3 convolutions back up, each level adding the encoder's
  features of its size; the last layer predicts a change of the crop in atanh space,
  ``tanh(atanh(I) + Δ)``, so the output stays an image; it starts near the identity map
  (small random weights: on it exactly, the identity terms' gradients have no direction);
* **feature-wise conditioning** besides the paper's input channels: every normalised layer
  is scaled and shifted by the password (``h ← (1 + γ(c)) · GN(h) + β(c)``, FiLM), where
  ``c`` holds the bits ``p − 0.5`` and Fourier features of ``p`` on the cyclic group
  ``Z/2^N``, ``cos(2π p k / 2^N)``, ``sin(2π p k / 2^N)`` for ``k = 2^0 … 2^{N−1}``. Under
  them the inverse password is the conjugate (the cosines agree, the sines change sign), so
  the relation ``T_{−p} = T_p^{-1}`` that training must teach is one the input can express;
  it still holds only as far as training taught it (approximate recovery).

Shapes: crops (N, 3, S, S) in [−1, 1], S divisible by 8 (64 here); passwords (N, bits) of
0/1, least significant bit first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INIT_STD = 3e-3  # the last layer's initial weights: an untrained transformer moves a crop a few grey levels
_INSIDE = 1 - 1 / 512  # crops are scaled by this before atanh: ±1 has none (a quarter grey level)


@dataclass(frozen=True)
class TransformerSpec:
    size: int = 64  # crop side in pixels
    bits: int = 16  # N of the N-bit password (the paper's 16)
    width: int = 24  # channels at 32 px (×2 at 16 px, ×4 at 8 px)
    blocks: int = 2  # residual blocks at 8 px
    groups: int = 4  # group norm groups

    @property
    def dim(self) -> int:
        """Values in one stored crop (S·S·3 uint8)."""
        return self.size * self.size * 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def password_features(bits: Tensor) -> Tensor:
    """(N, B) bits of 0/1 (least significant first) → (N, 3B) conditioning: ``bits − 0.5`` and the
    Fourier features of ``p = Σ bits_k 2^k`` on Z/2^B (under which ``−p`` is the conjugate)."""
    n_bits = bits.shape[1]
    weights = 2.0 ** torch.arange(n_bits, dtype=torch.float64)
    p = (bits.double() @ weights)[:, None]  # exact in float64 for any B ≤ 52
    angles = 2 * math.pi * torch.remainder(p * weights, 2.0**n_bits) / 2.0**n_bits
    return torch.cat([bits.double() - 0.5, angles.cos(), angles.sin()], 1).to(bits.dtype)


class FiLM(nn.Module):
    """Group norm without its own affine, then scaled and shifted by the password's features."""

    def __init__(self, channels: int, groups: int, conditioning: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, affine=False)
        self.affine = nn.Linear(conditioning, 2 * channels)
        nn.init.zeros_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        gamma, beta = self.affine(c)[:, :, None, None].chunk(2, 1)
        return F.leaky_relu((1 + gamma) * self.norm(h) + beta, 0.2)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, groups: int, conditioning: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.film1 = FiLM(channels, groups, conditioning)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.film2 = FiLM(channels, groups, conditioning)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        return h + self.film2(self.conv2(self.film1(self.conv1(h), c)), c)


def _up(inputs: int, outputs: int) -> nn.Module:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(inputs, outputs, 3, 1, 1))


class FaceIdentityTransformer(nn.Module):
    """``forward(crops, bits)`` → transformed crops, same shape: anonymizes under a password,
    recovers under its inverse (:func:`inverse_password`)."""

    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        if spec.size % 8 or spec.bits < 2:
            raise ValueError("the transformer needs a crop side divisible by 8 and at least 2 password bits")
        self.spec = spec
        w, g, c = spec.width, spec.groups, 3 * spec.bits
        self.down = nn.ModuleList(
            [nn.Conv2d(3 + spec.bits, w, 4, 2, 1), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.Conv2d(2 * w, 4 * w, 4, 2, 1)]
        )
        self.down_film = nn.ModuleList([FiLM(w, g, c), FiLM(2 * w, g, c), FiLM(4 * w, g, c)])
        self.blocks = nn.ModuleList([ResidualBlock(4 * w, g, c) for _ in range(spec.blocks)])
        # nearest upsampling then a 3×3 convolution: transposed convolutions drew a checkerboard
        self.up = nn.ModuleList([_up(4 * w, 2 * w), _up(2 * w, w)])
        self.up_film = nn.ModuleList([FiLM(2 * w, g, c), FiLM(w, g, c)])
        self.to_full = _up(w, w)
        self.out = nn.Conv2d(w + 3, 3, 3, 1, 1)  # sees the input crop again at full resolution
        # near the identity map, not on it: there every "must differ" gradient has no direction
        assert self.out.bias is not None
        nn.init.normal_(self.out.weight, std=INIT_STD)
        nn.init.zeros_(self.out.bias)

    def forward(self, crops: Tensor, bits: Tensor) -> Tensor:
        c = password_features(bits)
        tiled = (bits - 0.5)[:, :, None, None].expand(-1, -1, *crops.shape[2:])  # the paper's channels
        h = torch.cat([crops, tiled.to(crops.dtype)], 1)
        skips = []
        for conv, film in zip(self.down, self.down_film, strict=True):
            h = film(conv(h), c)
            skips.append(h)
        for block in self.blocks:
            h = block(h, c)
        for conv, film, skip in zip(self.up, self.up_film, reversed(skips[:-1]), strict=True):
            h = film(conv(h), c) + skip
        h = F.leaky_relu(self.to_full(h), 0.2)
        # the change is made in atanh space, so the output stays inside [−1, 1] however far
        # training pushes (an unbounded sum ran away under the adversarial terms)
        return torch.tanh(torch.atanh(crops * _INSIDE) + self.out(torch.cat([h, crops], 1)))


def inverse_password(bits: Tensor) -> Tensor:
    """(N, B) bits of ``p`` → bits of ``−p mod 2^B``, the paper's recovery password."""
    n_bits = bits.shape[1]
    weights = 2 ** torch.arange(n_bits)
    p = (bits.round().long() * weights).sum(1)
    q = torch.remainder(-p, 2**n_bits)
    return ((q[:, None] // weights) % 2).to(bits.dtype)
