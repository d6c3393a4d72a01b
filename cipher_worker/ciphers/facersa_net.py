"""FaceRSA's password mapper (AAAI 2024) as a torch module, at a CPU scale.

A **password converter** (a 2-layer MLP) turns the N-bit password, as a vector of ±1 (or a
sum of such vectors: the paper's associated password ``e₁ + e₂``), into a real password
vector ``p``; a **modulation module** after HairCLIP's predicts the edit of the identity
latent, ``w′ = w + Δw(w, p)``, through ``layers`` modulated layers::

    h ← LeakyReLU(γ(p) · (Wh − μ) / σ + β(p))

(``μ``, ``σ`` over a layer's features; ``γ``, ``β`` small fully connected nets of ``p``; ``γ``
starts at 1) and a last linear layer (zero-initialised: an untrained mapper edits nothing).
The edit is made odd in the password, ``Δw(w, e) = ½(f(w, e) − f(w, −e))``: with the paper's
plain mapper the "same face back" terms held every edit next to zero (a decryption password's
edit starts unrelated to its encryption password's), so the strangers never left the
original. Encryption and decryption are the same map under different passwords; that the
decryption password's edit undoes the encryption password's, in sequence, in any order and
for sums, is taught by training, so it holds approximately.

Shapes: latents (N, dim) — dcgan64's 88 identity coordinates or a stylegan2 codec's whitened
W+ layers flattened; passwords (N, bits).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class MapperSpec:
    dim: int  # identity coordinates
    bits: int = 64  # N of the N-bit password
    password_dim: int = 128  # the converter's output (512 in the paper, StyleGAN's width)
    hidden: int = 256
    layers: int = 3  # modulated layers

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Modulated(nn.Module):
    """One layer of the modulation module: linear, normalised, scaled and shifted by the password."""

    def __init__(self, inputs: int, outputs: int, password_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(inputs, outputs)
        self.gamma = nn.Sequential(nn.Linear(password_dim, outputs), nn.LeakyReLU(0.2), nn.Linear(outputs, outputs))
        self.beta = nn.Sequential(nn.Linear(password_dim, outputs), nn.LeakyReLU(0.2), nn.Linear(outputs, outputs))

    def forward(self, h: Tensor, p: Tensor) -> Tensor:
        h = F.layer_norm(self.linear(h), (self.linear.out_features,))  # (Wh − μ) / σ, no affine of its own
        return F.leaky_relu((1 + self.gamma(p)) * h + self.beta(p), 0.2)


class PasswordMapper(nn.Module):
    """``forward(w, password)`` → ``w + Δw``; encrypts under an encryption password, decrypts under
    the matching decryption password."""

    def __init__(self, spec: MapperSpec) -> None:
        super().__init__()
        if spec.dim < 1 or spec.bits < 1:
            raise ValueError("a password mapper needs at least one identity coordinate and one password bit")
        self.spec = spec
        self.converter = nn.Sequential(
            nn.Linear(spec.bits, spec.password_dim), nn.LeakyReLU(0.2), nn.Linear(spec.password_dim, spec.password_dim)
        )
        sizes = [spec.dim] + [spec.hidden] * spec.layers
        self.modulation = nn.ModuleList(Modulated(a, b, spec.password_dim) for a, b in itertools.pairwise(sizes))
        self.delta = nn.Linear(spec.hidden, spec.dim)
        nn.init.zeros_(self.delta.weight)
        nn.init.zeros_(self.delta.bias)

    def edit(self, w: Tensor, password: Tensor) -> Tensor:
        """The converter and the modulation module: (N, dim), (N, bits) → (N, dim) raw edits."""
        p = self.converter(password)
        h = w
        for layer in self.modulation:
            h = layer(h, p)
        return self.delta(h)

    def forward(self, w: Tensor, password: Tensor) -> Tensor:
        """(N, dim) latents, (N, bits) passwords → (N, dim) edited latents."""
        # odd in the password: at one latent the decryption password −e edits exactly back, so
        # training only has to teach how little the edit may change between a face and its stranger
        return w + 0.5 * (self.edit(w, password) - self.edit(w, -password))

    def inverse(self, w: Tensor, password: Tensor) -> Tensor:
        """Decryption is the same map, under the decryption password."""
        return self(w, password)
