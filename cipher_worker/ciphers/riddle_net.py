"""RiDDLE's latent encryptor (CVPR 2023, §3.1) as a torch module, at a CPU scale.

The paper slices a W+ code into coarse, medium and fine parts, lets each slice attend to the
matching slice of a random-latent password in a transformer block, concatenates the blocks'
outputs and maps them back to a code with one fully connected layer. The paper decrypts with
the same network (an involution per password); at this scale a learned involution stayed
next to the identity map (training could not move the strangers away and still come back),
so a second transformer of the same shape decrypts, trained with the first (both take the
same password; recovery is learned, so approximate). Each :class:`PasswordTransformer`:

* the identity vector (any ``dim``: dcgan64's 88 coordinates, or a stylegan2 codec's whitened
  W+ layers flattened) is cut into ``tokens`` equal slices (zero-padded at the end), the
  password (``password_dim`` Gaussian coordinates) into ``password_tokens``; each becomes a
  ``width``-wide token with a learned position;
* ``blocks`` pre-norm transformer blocks: self-attention among the code's slices,
  cross-attention from them to the password's, a feed-forward layer;
* the concatenated tokens go through one linear layer to a change of the code, added to it
  (zero-initialised: an untrained encryptor is the identity map, which training moves).

Shapes: codes (N, dim); passwords (N, password_dim) ~ N(0, I).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class EncryptorSpec:
    dim: int  # identity coordinates
    password_dim: int = 96  # the random-latent password
    tokens: int = 8  # slices of the code
    password_tokens: int = 8  # slices of the password
    width: int = 64
    heads: int = 4
    blocks: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Tokens(nn.Module):
    """(N, size) vector → (N, count, width) tokens: equal zero-padded slices, embedded, placed."""

    def __init__(self, size: int, count: int, width: int) -> None:
        super().__init__()
        self.count, self.chunk = count, math.ceil(size / count)
        self.pad = self.count * self.chunk - size
        self.embed = nn.Linear(self.chunk, width)
        self.position = nn.Parameter(torch.randn(count, width) * 0.02)

    def forward(self, v: Tensor) -> Tensor:
        slices = F.pad(v, (0, self.pad)).view(len(v), self.count, self.chunk)
        return self.embed(slices) + self.position


class EncryptorBlock(nn.Module):
    """Self-attention among code tokens, cross-attention to password tokens, feed-forward."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2, self.norm_pw, self.norm3 = (nn.LayerNorm(width) for _ in range(4))
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, h: Tensor, pw: Tensor) -> Tensor:
        q = self.norm1(h)
        h = h + self.self_attn(q, q, q, need_weights=False)[0]
        kv = self.norm_pw(pw)
        h = h + self.cross_attn(self.norm2(h), kv, kv, need_weights=False)[0]
        return h + self.ff(self.norm3(h))


class PasswordTransformer(nn.Module):
    """(N, dim) codes, (N, password_dim) passwords → (N, dim) codes, through cross-attention."""

    def __init__(self, spec: EncryptorSpec) -> None:
        super().__init__()
        self.code_tokens = Tokens(spec.dim, spec.tokens, spec.width)
        self.password_tokens = Tokens(spec.password_dim, spec.password_tokens, spec.width)
        self.blocks = nn.ModuleList(EncryptorBlock(spec.width, spec.heads) for _ in range(spec.blocks))
        self.norm = nn.LayerNorm(spec.width)
        self.head = nn.Linear(spec.tokens * spec.width, spec.dim)
        nn.init.zeros_(self.head.weight)  # starts as the identity map
        nn.init.zeros_(self.head.bias)

    def forward(self, code: Tensor, password: Tensor) -> Tensor:
        h, pw = self.code_tokens(code), self.password_tokens(password)
        for block in self.blocks:
            h = block(h, pw)
        return code + self.head(self.norm(h).flatten(1))


class LatentEncryptor(nn.Module):
    """:meth:`forward` encrypts, :meth:`inverse` decrypts with the same password (approximately)."""

    def __init__(self, spec: EncryptorSpec) -> None:
        super().__init__()
        if spec.dim < 1 or spec.password_dim < 1:
            raise ValueError("an encryptor needs at least one identity and one password coordinate")
        self.spec = spec
        self.encryptor = PasswordTransformer(spec)
        self.decryptor = PasswordTransformer(spec)

    def forward(self, code: Tensor, password: Tensor) -> Tensor:
        """(N, dim) identities, (N, password_dim) passwords → (N, dim) encrypted."""
        return self.encryptor(code, password)

    def inverse(self, code: Tensor, password: Tensor) -> Tensor:
        """(N, dim) encrypted, (N, password_dim) passwords → (N, dim) identities."""
        return self.decryptor(code, password)
