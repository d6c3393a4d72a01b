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

**Guided** (:attr:`TransformerSpec.guided`, the committed weights; the plain transformer above
is what the first weights were, and still loads). Trained data-free for half an hour on a CPU, the
plain transformer never learned to draw another face *and* hide the original in it for recovery:
it kept the original and fooled its judges (strangers 5–8/255 from the original, every one
re-identified), and when a guide term held it to another face, its recovery error stayed where
the guide put it (≈ 13/255 after 900 steps: no hidden channel formed). So the guided transformer
splits the paper's one network into what each part can do at this scale:

* **the face is drawn from the surroundings only.** The crop's pixels outside the template's
  face ellipse (2×2 blocks wholly outside it) are kept exactly; the face is the dcgan64
  codec's stranger (:class:`CodecGuide`) of those surroundings (the face itself replaced by the
  generator's mean face before encoding), its identity coordinates drawn from the password and
  turned by it, composited over the surroundings inside the ellipse, then refined by the
  U-Net above (which sees the surroundings and that stranger, never the original face). Nothing
  of the original face reaches the cover, so no judge can be fooled into passing it;
* **the password acts through what ``p`` and ``−p`` share** (:func:`canonical_password`): the
  inverse password draws the same cover from the same kept surroundings;
* **a recovery layer** (:meth:`FaceIdentityTransformer.transform_stored`, on whole grey levels):
  anonymizing adds to the rounded cover each 2×2 block's mean difference of the original to it,
  companded and spread over the block's four pixels, never more than ``code_levels`` (4) grey
  levels (a ghost of the original at about 1/32 of its contrast, too faint to see); recovering
  recognises a crop within those levels of its cover and adds the recorded differences back.
  Recovery is therefore the original at 2×2 block resolution (smoothly upsampled) with the
  cover's finer detail, under the right password only: any other password draws another cover,
  which the crop is far from, and anonymizes it again (another face). This is the paper's
  steganographic recovery made explicit instead of learned; its secrecy is the password's
  (2^30 classes of ``±p`` per face for 32 bits: as in the paper, the password space bounds a brute force).

Shapes: crops (N, 3, S, S) in [−1, 1], S divisible by 8 (64 here); passwords (N, bits) of
0/1, least significant bit first.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INIT_STD = 3e-3  # the last layer's initial weights: an untrained transformer moves a crop a few grey levels
# a block's mean difference for u units of its code: step · u^1.5 (fine steps where it is small,
# 4 grey levels for one unit, 256 for the most a block holds, so that nothing is cut off)
_COMPANDING = 1.5
_INSIDE = 1 - 1 / 512  # crops are scaled by this before atanh: ±1 has none (a quarter grey level)


@dataclass(frozen=True)
class TransformerSpec:
    size: int = 64  # crop side in pixels
    bits: int = 16  # N of the N-bit password (the paper's 16)
    width: int = 24  # channels at 32 px (×2 at 16 px, ×4 at 8 px)
    blocks: int = 2  # residual blocks at 8 px
    groups: int = 4  # group norm groups
    # the codec's stranger as the transformer's starting point (:class:`CodecGuide`); False: the
    # plain transformer of the first weights (which start on the identity map, and still load)
    guided: bool = False
    code_levels: int = 4  # a guided transformer's recovery layer: at most this many grey levels off its cover
    code_step: float = 4.0  # … and the grey levels of a block's mean difference for one unit of its code
    code_detail: float = 6.0  # … and of a pixel's difference about its block's mean for one level

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

    # a guided transformer's buffers (guide_buffers), typed here for the checker
    kept: Tensor
    mean_face: Tensor
    face: Tensor
    block_order: Tensor
    attribute_dim: Tensor
    basis: Tensor
    multipliers: Tensor

    def __init__(self, spec: TransformerSpec, guide: CodecGuide | None = None) -> None:
        super().__init__()
        if spec.size % 8 or spec.bits < 2:
            raise ValueError("the transformer needs a crop side divisible by 8 and at least 2 password bits")
        self.spec = spec
        self._guide = guide
        w, g, c = spec.width, spec.groups, 3 * spec.bits
        seen = 6 if spec.guided else 3  # the crop; guided: its surroundings and the codec's stranger on them
        if spec.guided:
            for name, value in guide_buffers(spec).items():
                self.register_buffer(name, value)
        self.down = nn.ModuleList(
            [nn.Conv2d(seen + spec.bits, w, 4, 2, 1), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.Conv2d(2 * w, 4 * w, 4, 2, 1)]
        )
        self.down_film = nn.ModuleList([FiLM(w, g, c), FiLM(2 * w, g, c), FiLM(4 * w, g, c)])
        self.blocks = nn.ModuleList([ResidualBlock(4 * w, g, c) for _ in range(spec.blocks)])
        # nearest upsampling then a 3×3 convolution: transposed convolutions drew a checkerboard
        self.up = nn.ModuleList([_up(4 * w, 2 * w), _up(2 * w, w)])
        self.up_film = nn.ModuleList([FiLM(2 * w, g, c), FiLM(w, g, c)])
        self.to_full = _up(w, w)
        self.out = nn.Conv2d(w + seen, 3, 3, 1, 1)  # sees its input again at full resolution
        # near the identity map, not on it: there every "must differ" gradient has no direction
        assert self.out.bias is not None
        nn.init.normal_(self.out.weight, std=INIT_STD)
        nn.init.zeros_(self.out.bias)

    def stranger(self, crops: Tensor, bits: Tensor) -> Tensor:
        """The codec's stranger for these crops under these passwords (:class:`CodecGuide`), no gradient."""
        guide = self._guide or codec_guide()
        attribute_dim = int(self.attribute_dim)
        return guide(crops, bits, self.basis, attribute_dim, self.multipliers)

    def surroundings(self, crops: Tensor) -> Tensor:
        """What of a crop a guided transformer looks at: the pixels it keeps (2×2 blocks wholly
        outside the template's face ellipse), extended over the face by normalised convolutions
        (the finest that reaches a pixel), blended into the generator's mean face inside the
        ellipse. A transformed crop
        keeps these pixels exactly, so its surroundings are the original's."""
        kept = self.kept.to(crops.dtype)
        mean_face = self.mean_face.to(crops.dtype)
        face = self.face.to(crops.dtype)
        num, den = crops * kept, kept.expand(1, 1, *crops.shape[2:])
        scales = []
        for _ in range(8):  # widening averages of the kept pixels; each pixel takes the finest that reaches it
            num = F.avg_pool2d(F.pad(num, (1, 1, 1, 1), mode="replicate"), 3, 1)
            den = F.avg_pool2d(F.pad(den, (1, 1, 1, 1), mode="replicate"), 3, 1)
            scales.append((num / den.clamp(min=1e-3), den))
        fill = mean_face.expand_as(crops)
        for value, weight in reversed(scales):
            fill = fill + (weight / 0.25).clamp(max=1) * (value - fill)
        fill = fill + face * (mean_face - fill)  # the face itself: the mean face, whose identity is no one's
        return crops * kept + (1 - kept) * fill

    def cover(self, crops: Tensor, bits: Tensor) -> Tensor:
        """A guided transformer's anonymized face before its recovery layer: the codec's stranger
        of the crop's surroundings under the password (its face ellipse over the surroundings),
        refined by the network; a function of the surroundings and of ``p`` only through what
        ``p`` and ``−p`` share, so recovery draws the very same cover again."""
        return self.cover_parts(crops, bits)[1]

    def cover_parts(self, crops: Tensor, bits: Tensor) -> tuple[Tensor, Tensor]:
        """(the codec's stranger over the surroundings, the network's cover from it)."""
        q = canonical_password(bits)
        seen = self.surroundings(crops)
        face = self.face.to(crops.dtype)
        base = seen + face * (self.stranger(seen, q) - seen)
        change = self._network(torch.cat([seen, base], 1), q)
        kept = self.kept.to(crops.dtype)
        refined = torch.tanh(torch.atanh(base.clamp(-1, 1) * _INSIDE) + change)
        return base, crops * kept + (1 - kept) * refined

    def forward(self, crops: Tensor, bits: Tensor) -> Tensor:
        """The plain transformer: the transformed crops. A guided one: its cover (the anonymized
        face without the recovery layer of :meth:`transform_stored`, which needs uint8 values)."""
        if self.spec.guided:
            return self.cover(crops, bits)
        change = self._network(crops, bits)
        # the change is made in atanh space, so the output stays inside [−1, 1] however far
        # training pushes (an unbounded sum ran away under the adversarial terms)
        return torch.tanh(torch.atanh(crops * _INSIDE) + change)

    def _network(self, seen: Tensor, bits: Tensor) -> Tensor:
        c = password_features(bits)
        tiled = (bits - 0.5)[:, :, None, None].expand(-1, -1, *seen.shape[2:])  # the paper's channels
        h = torch.cat([seen, tiled.to(seen.dtype)], 1)
        skips = []
        for conv, film in zip(self.down, self.down_film, strict=True):
            h = film(conv(h), c)
            skips.append(h)
        for block in self.blocks:
            h = block(h, c)
        for conv, film, skip in zip(self.up, self.up_film, reversed(skips[:-1]), strict=True):
            h = film(conv(h), c) + skip
        h = F.leaky_relu(self.to_full(h), 0.2)
        return self.out(torch.cat([h, seen], 1))

    def transform_stored(self, crops: Tensor, bits: Tensor) -> Tensor:
        """A guided transformer on (N, 3, S, S) crops of whole grey levels 0–255 (float): each
        anonymized, or recovered if it is an anonymization under ``±p``; whole grey levels out.

        The cover is drawn and rounded. A crop within ``code_levels`` of it nearly everywhere off
        the kept pixels was anonymized under ``±p``: each 2×2 block's four differences to the
        cover are its code, their sum the block's mean difference to the original (companded,
        ``code_step`` grey levels for one unit), their spread about it the detail within the
        block (``code_detail`` grey levels a unit); both are added back, the means smoothly
        upsampled. Any other crop is anonymized: the cover plus the code of its differences to
        the cover, whole levels no more than ``code_levels`` off it, the sum exact; the detail
        is written under signs drawn from the password (:func:`keyed_signs`)."""
        levels, step, detail = self.spec.code_levels, self.spec.code_step, self.spec.code_detail
        region = 1 - self.kept.to(crops.dtype)
        cover = ((self.cover(crops / 127.5 - 1, bits) + 1) * 127.5).round().clamp(levels, 255 - levels)
        d = (crops - cover) * region
        area = region.sum()
        within = (((d.abs() <= levels).to(crops.dtype) * region).sum((1, 2, 3)) / (3 * area)) >= 0.99

        def blocks(t: Tensor) -> Tensor:  # (N, 3, S, S) → (N, 3, 4, S/2, S/2): each block's four pixels
            n, c, h, w = t.shape
            return F.pixel_unshuffle(t, 2).view(n, c, 4, h // 2, w // 2)

        def pixels(t: Tensor) -> Tensor:
            n, c, _, h, w = t.shape
            return F.pixel_shuffle(t.reshape(n, 4 * c, h, w), 2)

        def means(units: Tensor) -> Tensor:  # (N, 3, 1, S/2, S/2) unit sums → (N, 3, S, S) grey levels
            mean = units.sign() * step * units.abs() ** _COMPANDING
            return F.interpolate(mean[:, :, 0], scale_factor=2, mode="bilinear", align_corners=False) * region

        signs = blocks(keyed_signs(canonical_password(bits), crops.shape))
        # recovery
        code = blocks(d.clamp(-levels, levels))
        units = code.sum(2, keepdim=True)
        recovered = cover + means(units) + detail * pixels(signs * (code - units / 4))
        # anonymization: the sums first, then the detail about the smooth means they decode to
        mean = blocks(d).mean(2, keepdim=True)
        units = (mean.sign() * (mean.abs() / step) ** (1 / _COMPANDING)).round().clamp(-4 * levels, 4 * levels)
        wanted = units / 4 + (signs * blocks(d - means(units)) / detail if detail > 0 else 0 * code)
        wanted = wanted - wanted.mean(2, keepdim=True) + units / 4  # the detail has no sum of its own
        code = wanted.round().clamp(-levels, levels)
        tie = blocks(self.block_order.to(crops.dtype).expand_as(crops)) * 1e-3
        for _ in range(4 * levels):  # whole levels to the sum, one a block at a time, where most wanted
            short = units - code.sum(2, keepdim=True)
            if not short.abs().any():
                break
            room_up = torch.where(code < levels, wanted - code - tie, torch.full_like(code, -1e9))
            room_down = torch.where(code > -levels, wanted - code + tie, torch.full_like(code, 1e9))
            up = F.one_hot(room_up.argmax(2), 4).permute(0, 1, 4, 2, 3).to(code.dtype)
            down = F.one_hot(room_down.argmin(2), 4).permute(0, 1, 4, 2, 3).to(code.dtype)
            code = code + up * (short > 0).to(code.dtype) - down * (short < 0).to(code.dtype)
        anonymized = cover + pixels(code)
        out = torch.where(within[:, None, None, None], recovered, anonymized).clamp(0, 255)
        return crops * (1 - region) + out * region


def keyed_signs(bits: Tensor, shape: torch.Size) -> Tensor:
    """(N, B) password bits → (N, 3, S, S) signs ±1 drawn from ``p`` (torch's CPU generator): the
    recovery layer's detail is written under them, so that a high-pass of an anonymized crop
    shows no edges of the original, only where they were."""
    values = password_value(bits).tolist()
    draws = [torch.randint(0, 2, shape[1:], generator=torch.Generator().manual_seed(int(v) + 2**40)) for v in values]
    return (torch.stack(draws) * 2 - 1).float()


def canonical_password(bits: Tensor) -> Tensor:
    """(N, B) bits of ``p`` → bits of the smaller of ``p`` and ``−p mod 2^B``: what a password
    and its inverse share."""
    n_bits = bits.shape[1]
    p = password_value(bits)
    q = torch.minimum(p, torch.remainder(-p, 2**n_bits))
    weights = 2 ** torch.arange(n_bits)
    return ((q[:, None] // weights) % 2).to(bits.dtype)


def password_value(bits: Tensor) -> Tensor:
    """(N, B) bits, least significant first → (N,) int64 ``p``."""
    weights = 2 ** torch.arange(bits.shape[1])
    return (bits.round().long() * weights).sum(1)


def rotation_angles(bits: Tensor, multipliers: Tensor) -> Tensor:
    """(N, B) password bits and (K,) odd multipliers ``m`` → (N, K) angles ``2π (p·m mod 2^B) / 2^B``
    (odd in ``p`` on Z/2^B; the guided transformer gives it canonical passwords)."""
    n_bits = bits.shape[1]
    turns = torch.remainder(password_value(bits)[:, None] * multipliers[None], 2**n_bits)
    return (2 * math.pi * turns.double() / 2.0**n_bits).float()


def password_identity(bits: Tensor, dim: int) -> Tensor:
    """(N, B) password bits → (N, dim) standard normal identity coordinates drawn from ``p``
    (torch's CPU generator, seeded by ``p``: the same everywhere)."""
    values = password_value(bits).tolist()
    return torch.stack([torch.randn(dim, generator=torch.Generator().manual_seed(int(v))) for v in values])


def rotate_pairs(identity: Tensor, angles: Tensor) -> Tensor:
    """Identity coordinates (N, d) turned in the planes of their pairs (0, 1), (2, 3), … by (N, d//2)
    angles; an odd last coordinate stays."""
    k = angles.shape[1]
    u, v = identity[:, 0 : 2 * k : 2], identity[:, 1 : 2 * k : 2]
    c, s = angles.cos(), angles.sin()
    turned = torch.stack([c * u - s * v, s * u + c * v], 2).reshape(len(identity), 2 * k)
    return torch.cat([turned, identity[:, 2 * k :]], 1)


class CodecGuide:
    """The dcgan64 codec's stranger for a crop and a password: the crop encoded (the codec's
    data-free encoder), its identity coordinates turned by the password (:func:`rotate_pairs`,
    the inverse password turns them back), drawn by the codec's generator. Frozen networks that
    the codec ships, so not part of the transformer's weights (nor of their fingerprint: the
    envelope's codec fingerprint names them)."""

    def __init__(self, encoder: nn.Module, generator: nn.Module) -> None:
        self.encoder, self.generator = encoder, generator

    def __call__(self, crops: Tensor, bits: Tensor, basis: Tensor, attribute_dim: int, multipliers: Tensor) -> Tensor:
        with torch.no_grad():
            coords = self.encoder(crops.float()) @ basis
            identity = rotate_pairs(coords[:, attribute_dim:], rotation_angles(bits, multipliers))
            identity = identity + password_identity(bits, identity.shape[1])
            # at the prior's typical length, a little short of it (the codec's truncation)
            identity = identity * (0.9 * identity.shape[1] ** 0.5 / identity.norm(dim=1, keepdim=True))
            z = torch.cat([coords[:, :attribute_dim], identity], 1) @ basis.T
            return self.generator(z).to(crops.dtype)


@lru_cache(maxsize=1)
def codec_guide() -> CodecGuide:
    """The committed dcgan64 codec's encoder and generator as a :class:`CodecGuide` (loaded once)."""
    from ..codecs.dcgan64 import ENCODER_PATH
    from ..codecs.dcgan64_net import DCGANEncoder, load_generator

    checkpoint = torch.load(ENCODER_PATH, map_location="cpu", weights_only=True)
    encoder = DCGANEncoder()
    encoder.load_state_dict({k: v.float() for k, v in checkpoint["encoder"].items()})
    return CodecGuide(encoder.eval().requires_grad_(False), load_generator())


def guide_buffers(spec: TransformerSpec, seed: int = 0) -> dict[str, Tensor]:
    """What a guided transformer keeps beside its layers (in its weights, so in its fingerprint):
    the codec's attribute/identity basis and its number of attribute coordinates, the face
    ellipse of the codec's template as (1, 1, S, S) weights, and one odd multiplier per plane of
    identity coordinates (fixed by ``seed``)."""
    import numpy as np

    from ..codecs.dcgan64 import ATTRIBUTES_PATH
    from ..facemask import crop_weights, template_face

    split = np.load(ATTRIBUTES_PATH)
    attribute_dim = int(split["attribute_dim"])
    basis = torch.from_numpy(split["basis"]).float()
    face = torch.from_numpy(crop_weights(template_face(split["template"].astype(np.float64)), spec.size)).float()
    touched = F.max_pool2d((face > 0).float()[None, None], 2)  # 2×2 blocks the face reaches
    kept = 1 - F.interpolate(touched, scale_factor=2, mode="nearest")
    gen = torch.Generator().manual_seed(seed)
    planes = (len(basis) - attribute_dim) // 2
    # odd, below 2^31: p·m stays inside int64 for passwords of up to 32 bits
    odd = torch.randint(0, 2 ** (min(spec.bits, 32) - 2), (planes,), generator=gen) * 2 + 1
    from ..codecs.dcgan64_net import Z_DIM, load_generator

    with torch.no_grad():
        mean_face = load_generator()(torch.randn(256, Z_DIM, generator=gen)).mean(0, keepdim=True)
    order = torch.tensor([[0.0, 2.0], [3.0, 1.0]]).repeat(spec.size // 2, spec.size // 2)  # diagonal first
    return {
        "basis": basis,
        "attribute_dim": torch.tensor(attribute_dim),
        "face": face[None, None],
        "kept": kept,
        "mean_face": mean_face,
        "multipliers": odd.long(),
        "block_order": order[None, None],
    }


def inverse_password(bits: Tensor) -> Tensor:
    """(N, B) bits of ``p`` → bits of ``−p mod 2^B``, the paper's recovery password."""
    n_bits = bits.shape[1]
    weights = 2 ** torch.arange(n_bits)
    q = torch.remainder(-password_value(bits), 2**n_bits)
    return ((q[:, None] // weights) % 2).to(bits.dtype)
