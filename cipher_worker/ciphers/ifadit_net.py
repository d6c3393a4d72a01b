"""iFADIT's Secure Identity Flow (SIF) as a torch module, at a CPU scale.

After the paper (Pattern Recognition 2025, §3.3): a key generator turns the KDF output into a
secret vector ``k`` (the paper runs StyleGAN's mapping network on it; the dcgan64 generator
has none, so a small MLP learned with the flow plays its part), and N secure affine coupling
blocks (RealNVP couplings with ``k`` concatenated to every sub-network's input) transform
the identity vector::

    z₂ ← z₂ · exp(a(ω[z₁, k])) + φ[z₁, k]
    z₁ ← z₁ · exp(a(ρ[z₂, k])) + η[z₂, k]

with ``a`` a sigmoid scaled to (−c, c) (centred, so a block can shrink as well as grow). The
inverse undoes the two updates in the opposite order, so the flow is invertible by
construction, whatever its weights. Between blocks a fixed permutation (a buffer, seeded by
the spec, part of the weights' fingerprint) mixes the halves. Every size follows
:class:`FlowSpec`, so the same module runs on dcgan64's 88 identity coordinates or on a
StyleGAN2 codec's whitened W+ layers.

Shapes: identities (N, dim); keys (N, KEY_BYTES) in [−1, 1] (the paper's Norm(KDF(s))).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

KEY_BYTES = 32  # the KDF output the key generator reads: 256 bits


@dataclass(frozen=True)
class FlowSpec:
    dim: int  # identity coordinates
    blocks: int = 4  # secure affine coupling blocks
    hidden: int = 128  # width of each of the four sub-networks of a block
    key_dim: int = 64  # the secret vector k
    scale: float = 1.0  # c: one coupling scales a coordinate by at most e^±c
    seed: int = 0  # the permutations between blocks

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _subnet(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    layers = [nn.Linear(inputs, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2)]
    net = nn.Sequential(*layers, nn.Linear(hidden, outputs))
    last = net[-1]
    assert isinstance(last, nn.Linear)
    nn.init.zeros_(last.weight)  # every block starts as the identity map: training moves it
    nn.init.zeros_(last.bias)
    return net


class SecureCoupling(nn.Module):
    """One secure affine coupling block on halves of ``first`` and ``second`` coordinates."""

    def __init__(self, first: int, second: int, key_dim: int, hidden: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.gate1 = nn.Linear(key_dim, first)  # the key's own view of z₁ …
        self.gate2 = nn.Linear(key_dim, second)  # … and of z₂
        self.omega = _subnet(2 * first + key_dim, hidden, second)  # log-scale of z₂
        self.phi = _subnet(2 * first + key_dim, hidden, second)  # shift of z₂
        self.rho = _subnet(2 * second + key_dim, hidden, first)  # log-scale of z₁
        self.eta = _subnet(2 * second + key_dim, hidden, first)  # shift of z₁
        # a linear path beside φ and η: shears z₂ += A(k) z₁ (and back) compose into key-dependent
        # rotations, which keep the prior exactly
        self.shear2 = nn.Linear(first, second, bias=False)
        self.shear1 = nn.Linear(second, first, bias=False)

    def _condition(self, z: Tensor, gate: nn.Linear, key: Tensor) -> Tensor:
        # [z, k] as in the paper, and z ⊙ g(k): a key-dependent linear view of z, which lets a
        # coupling shear (and so rotate) the identity differently under each key
        return torch.cat([z, z * gate(key), key], 1)

    def _a(self, x: Tensor) -> Tensor:
        return self.scale * (2 * torch.sigmoid(x) - 1)

    def forward(self, z1: Tensor, z2: Tensor, key: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """→ (z₁′, z₂′, log |det J| per row)."""
        h = self._condition(z1, self.gate1, key)
        s2 = self._a(self.omega(h))
        z2 = z2 * torch.exp(s2) + self.phi(h) + self.shear2(z1 * self.gate1(key))
        h = self._condition(z2, self.gate2, key)
        s1 = self._a(self.rho(h))
        z1 = z1 * torch.exp(s1) + self.eta(h) + self.shear1(z2 * self.gate2(key))
        return z1, z2, s1.sum(1) + s2.sum(1)

    def inverse(self, z1: Tensor, z2: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
        h = self._condition(z2, self.gate2, key)
        z1 = (z1 - self.eta(h) - self.shear1(z2 * self.gate2(key))) * torch.exp(-self._a(self.rho(h)))
        h = self._condition(z1, self.gate1, key)
        z2 = (z2 - self.phi(h) - self.shear2(z1 * self.gate1(key))) * torch.exp(-self._a(self.omega(h)))
        return z1, z2


class SecureIdentityFlow(nn.Module):
    """The key generator and the coupling blocks; :meth:`forward` encrypts, :meth:`inverse` decrypts."""

    def __init__(self, spec: FlowSpec) -> None:
        super().__init__()
        if spec.dim < 2:
            raise ValueError("a coupling flow needs at least 2 identity coordinates")
        self.spec = spec
        self.first = spec.dim // 2
        self.keygen = nn.Sequential(nn.Linear(KEY_BYTES, 128), nn.LeakyReLU(0.2), nn.Linear(128, spec.key_dim))
        second = spec.dim - self.first
        self.blocks = nn.ModuleList(
            SecureCoupling(self.first, second, spec.key_dim, spec.hidden, spec.scale) for _ in range(spec.blocks)
        )
        rng = torch.Generator().manual_seed(spec.seed)
        for i in range(spec.blocks):
            perm = torch.randperm(spec.dim, generator=rng)
            self.register_buffer(f"perm{i}", perm)
            self.register_buffer(f"unperm{i}", torch.argsort(perm))

    def _perm(self, i: int, inverse: bool = False) -> Tensor:
        buffer = getattr(self, f"{'unperm' if inverse else 'perm'}{i}")
        assert isinstance(buffer, Tensor)
        return buffer

    def forward(self, x: Tensor, key: Tensor) -> tuple[Tensor, Tensor]:
        """(N, dim) identities, (N, KEY_BYTES) keys → (N, dim) encrypted, (N,) log |det J|."""
        k = self.keygen(key)
        logdet = x.new_zeros(len(x))
        for i, block in enumerate(self.blocks):
            x = x[:, self._perm(i)]
            z1, z2, ld = block(x[:, : self.first], x[:, self.first :], k)
            x, logdet = torch.cat([z1, z2], 1), logdet + ld
        return x, logdet

    def inverse(self, y: Tensor, key: Tensor) -> Tensor:
        """(N, dim) encrypted, (N, KEY_BYTES) keys → (N, dim) identities."""
        k = self.keygen(key)
        for i in reversed(range(len(self.blocks))):
            block = self.blocks[i]
            assert isinstance(block, SecureCoupling)
            z1, z2 = block.inverse(y[:, : self.first], y[:, self.first :], k)
            y = torch.cat([z1, z2], 1)[:, self._perm(i, inverse=True)]
        return y
