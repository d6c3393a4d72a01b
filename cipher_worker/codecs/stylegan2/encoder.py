"""The e4e and pSp face encoders of the ``stylegan2`` codec: aligned RGB face → W+ codes.

Both are an IR-SE backbone (IR-SE-50 in the published models) with a feature pyramid and one
small "style block" per W+ layer: blocks 0–2 read the coarsest features, 3–6 the middle ones,
the rest the finest. pSp (GradualStyleEncoder) predicts every layer directly; e4e
(Encoder4Editing) predicts one W and per-layer offsets from it.

The modules keep the layer names of the original code, so the ``encoder.*`` tensors of a
published checkpoint load with strict key and shape checks. The architecture is read off those
tensors rather than hard-coded, which also lets tests use tiny random checkpoints in the very
same format.

Speed: the published e4e is 72 GMACs per 256×256 face (33 in the backbone, 39 in the 18 style
blocks), >90% of the time in convolutions running near the CPU's peak, so only lower precision
helps: folding the BatchNorms into the convolutions or inference_mode measured within noise. Weights are
kept channels_last (~10% faster at batch 4); ``bf16=True`` halves the time on CPUs with
AVX512-BF16 or AMX.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import BadCheckpoint
from .checkpoint import load_strict, read_checkpoint, require, sub_state
from .ops import EqualLinear

WHAT = "e4e/pSp checkpoint"
KINDS = {"Encoder4Editing": "e4e", "GradualStyleEncoder": "psp"}
COARSE_END, MIDDLE_END = 3, 7  # style blocks [0, 3) read c3, [3, 7) read p2, the rest p1
STAGES = 4  # every stage halves the resolution: c3 is input_size / 16


@dataclass(frozen=True)
class Layout:
    """What a checkpoint's tensors say about the network."""

    in_channels: int
    units: tuple[tuple[int, int, int, int], ...]  # per body unit: in channels, depth, stride, SE hidden width
    taps: tuple[int, int, int]  # body indices whose outputs are c1, c2, c3 (ends of stages 2, 3, 4)
    style_convs: tuple[int, ...]  # stride-2 convolutions in each style block
    style_dim: int

    @property
    def input_size(self) -> int:
        return 16 * 2 ** self.style_convs[0]  # the coarse blocks take c3 (input / 16) down to 1×1


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class _IRSEUnit(nn.Module):
    """bottleneck_IR_SE: BN → 3×3 conv → PReLU → strided 3×3 conv → BN → SE, plus a shortcut."""

    def __init__(self, cin: int, depth: int, stride: int, se_hidden: int) -> None:
        super().__init__()
        self.shortcut_layer: nn.Module
        if cin == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)  # a plain subsampling
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            _SqueezeExcite(depth, se_hidden),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class _StyleBlock(nn.Module):
    """GradualStyleBlock: stride-2 3×3 convs with LeakyReLU down to 1×1, then a linear layer → one W."""

    def __init__(self, cin: int, width: int, n_convs: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers += [nn.Conv2d(cin if i == 0 else width, width, 3, 2, 1), nn.LeakyReLU()]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.convs(x).flatten(1))


def _level(style: int) -> int:
    """The pyramid level style block ``style`` reads: 0 coarsest (c3), 1 middle (p2), 2 finest (p1)."""
    return 0 if style < COARSE_END else 1 if style < MIDDLE_END else 2


def _upsample_add(coarse: Tensor, lateral: Tensor) -> Tensor:
    return F.interpolate(coarse, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class StyleEncoder(nn.Module):
    """e4e or pSp encoder: (N, 3, input_size, input_size) RGB in [-1, 1] → (N, n_styles, style_dim) W+."""

    latent_avg: Tensor  # added to the codes: (0,) for none, else (1 or n_styles, style_dim)

    def __init__(self, kind: str, layout: Layout) -> None:
        super().__init__()
        if kind not in ("e4e", "psp"):
            raise ValueError(f"kind must be 'e4e' or 'psp', not {kind!r}")
        self.kind = kind
        self.input_size = layout.input_size
        self.n_styles = len(layout.style_convs)
        self.style_dim = layout.style_dim
        self.taps = layout.taps
        self.in_channels = layout.in_channels
        self.bf16 = False  # run the network under bfloat16 autocast (the codes stay float32)
        stem = layout.units[0][0]
        widths = [layout.units[i][1] for i in layout.taps]  # c1, c2, c3
        self.input_layer = nn.Sequential(
            nn.Conv2d(layout.in_channels, stem, 3, 1, 1, bias=False), nn.BatchNorm2d(stem), nn.PReLU(stem)
        )
        self.body = nn.Sequential(*(_IRSEUnit(*unit) for unit in layout.units))
        self.styles = nn.ModuleList(_StyleBlock(widths[2], layout.style_dim, n) for n in layout.style_convs)
        self.latlayer1 = nn.Conv2d(widths[1], widths[2], 1)
        self.latlayer2 = nn.Conv2d(widths[0], widths[2], 1)
        # kept out of the state dict, which stays exactly that of the original encoder
        self.register_buffer("latent_avg", torch.zeros(0), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        expected = (self.in_channels, self.input_size, self.input_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"expected images of shape (N, {', '.join(map(str, expected))}), got {tuple(images.shape)}"
            )
        with torch.autocast(images.device.type, torch.bfloat16, enabled=self.bf16):
            w = self._predict(images.contiguous(memory_format=torch.channels_last)).float()
        if self.kind == "e4e":  # block 0 gives the base W, the others offsets from it
            w = torch.cat([w[:, :1], w[:, 1:] + w[:, :1]], dim=1)
        if self.latent_avg.numel():
            w = w + self.latent_avg  # (1 or n_styles, style_dim) broadcasts over the batch
        return w

    def _predict(self, images: Tensor) -> Tensor:
        x = self.input_layer(images)
        features = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.taps:
                features.append(x)
        c1, c2, c3 = features
        pyramid, codes = [c3], []  # the FPN levels, coarse to fine, built when a block first needs them
        for i, block in enumerate(self.styles):
            if i == COARSE_END:
                pyramid.append(_upsample_add(c3, self.latlayer1(c2)))
            elif i == MIDDLE_END:
                pyramid.append(_upsample_add(pyramid[1], self.latlayer2(c1)))
            codes.append(block(pyramid[_level(i)]))
        return torch.stack(codes, dim=1)


def infer_layout(state: Mapping[str, Tensor], where: str = WHAT) -> Layout:
    """Read the architecture off an encoder state dict (keys without the ``encoder.`` prefix)."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise BadCheckpoint(f"{where} has no encoder.{key}")
        return tuple(state[key].shape)

    def count(pattern: str) -> int:
        found = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
        return max(found) + 1 if found else 0

    stem = shape("input_layer.0.weight")
    if len(stem) != 4:
        raise BadCheckpoint(f"{where}: encoder.input_layer.0.weight has shape {stem}, not a 2D convolution")
    units, cin, depths = [], stem[0], list[int]()
    for i in range(count(r"body\.(\d+)\.")):
        depth = shape(f"body.{i}.res_layer.1.weight")[0]
        hidden = shape(f"body.{i}.res_layer.5.fc1.weight")[0]
        first = not depths or depths[-1] != depth  # every stage opens with a stride-2 unit, as in IR-SE-50
        units.append((cin, depth, 2 if first else 1, hidden))
        depths.append(depth)
        cin = depth
    stage_ends = [i for i in range(len(depths)) if i + 1 == len(depths) or depths[i + 1] != depths[i]]
    if len(stage_ends) != STAGES:
        widths = "/".join(str(depths[i]) for i in stage_ends) or "none"
        raise BadCheckpoint(
            f"{where}: the encoder backbone has {len(stage_ends)} stages (widths {widths}); an IR-SE backbone has 4"
        )
    n_styles = count(r"styles\.(\d+)\.")
    if n_styles == 0:
        raise BadCheckpoint(f"{where} has no encoder.styles.*: not a GradualStyleEncoder/Encoder4Editing")
    style_convs = tuple(count(rf"styles\.{i}\.convs\.(\d+)\.weight") // 2 + 1 for i in range(n_styles))
    extra = [_level(i) for i in range(n_styles)]  # each finer input needs one more stride-2 conv
    coarse = Counter(n - e for n, e in zip(style_convs, extra, strict=True)).most_common(1)[0][0]
    for i, (n, e) in enumerate(zip(style_convs, extra, strict=True)):
        if n != coarse + e:
            raise BadCheckpoint(
                f"{where}: encoder style block {i} has {n} convolutions, expected {coarse + e} like its neighbours"
            )
    return Layout(
        in_channels=stem[1],
        units=tuple(units),
        taps=(stage_ends[1], stage_ends[2], stage_ends[3]),
        style_convs=style_convs,
        style_dim=shape("styles.0.linear.weight")[0],
    )


def load_encoder(
    path: str | os.PathLike[str], device: torch.device | str = "cpu", *, bf16: bool = False
) -> tuple[StyleEncoder, dict[str, Tensor]]:
    """Read an e4e/pSp checkpoint. Returns the encoder (eval mode, no grad, float32 weights, on ``device``)
    and the generator state dict found under ``decoder.`` (prefix removed; {} when absent).

    ``bf16`` runs the network under bfloat16 autocast: on 2 Zen 4 cores the published e4e then takes
    0.38–0.48 instead of 0.83–0.88 s per face (batch 4–1), its codes off by ~0.7% of their spread;
    CPUs without AVX512-BF16 or AMX emulate bfloat16 and get slower."""
    data = read_checkpoint(path, WHAT)
    where = f"{WHAT} {path}"
    if "g_ema" in data:
        raise BadCheckpoint(
            f"{path} is a rosinality StyleGAN2 checkpoint (g_ema), not an e4e/pSp encoder; "
            "pass it as VEIL_STYLEGAN2_CKPT"
        )
    state = require(data, "state_dict", WHAT, path)
    opts = require(data, "opts", WHAT, path)
    opts = vars(opts) if isinstance(opts, argparse.Namespace) else opts  # dicts in every published checkpoint
    if not isinstance(opts, dict) or "encoder_type" not in opts:
        raise BadCheckpoint(f"{where} does not say its encoder_type in opts")
    encoder_type = opts["encoder_type"]
    if encoder_type not in KINDS:
        raise BadCheckpoint(
            f"{where} has encoder_type {encoder_type!r}; supported: Encoder4Editing (e4e), GradualStyleEncoder (pSp)"
        )
    encoder_state = sub_state(state, "encoder.")
    layout = infer_layout(encoder_state, where)
    if layout.in_channels != 3:
        raise BadCheckpoint(f"{where} encodes {layout.in_channels}-channel inputs (sketches? label maps?), not RGB")
    n_styles, found = _n_styles(opts, len(layout.style_convs)), len(layout.style_convs)
    if n_styles != found:
        raise BadCheckpoint(f"{where}: its opts ask for {n_styles} W+ layers but its encoder has {found} style blocks")

    latent_avg = torch.zeros(0)
    if opts.get("start_from_latent_avg", "latent_avg" in data):  # the originals add it exactly when this is set
        latent_avg, dim = require(data, "latent_avg", WHAT, path), layout.style_dim
        if (
            not isinstance(latent_avg, Tensor)
            or latent_avg.shape[-1:] != (dim,)
            or latent_avg.numel() // dim not in (1, n_styles)
        ):
            got = tuple(latent_avg.shape) if isinstance(latent_avg, Tensor) else type(latent_avg).__name__
            raise BadCheckpoint(f"{where}: latent_avg is {got}, expected ({dim},), (1, {dim}) or ({n_styles}, {dim})")

    with torch.device("meta"):  # no random initialisation: every weight comes from the checkpoint
        encoder = StyleEncoder(KINDS[encoder_type], layout)
    encoder.to_empty(device="cpu")
    load_strict(encoder, encoder_state, f"{where} (encoder)")
    # a copy: a view would keep the whole memory-mapped checkpoint resident
    encoder.latent_avg = latent_avg.reshape(-1, layout.style_dim).float().clone()
    encoder.bf16 = bf16
    encoder.eval().requires_grad_(False).to(device).apply(_channels_last)
    return encoder, sub_state(state, "decoder.")


def _channels_last(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):  # oneDNN's fastest CPU layout; forward() converts the input to match
        module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)


def _n_styles(opts: Mapping[str, Any], found: int) -> int:
    if opts.get("n_styles") is not None:
        return int(opts["n_styles"])
    size = opts.get("stylegan_size") or opts.get("output_size")
    return 2 * int(math.log2(size)) - 2 if size else found  # neither saved: trust the tensors


def make_layout(
    widths: tuple[int, ...] = (64, 128, 256, 512),
    units: tuple[int, ...] = (3, 4, 14, 3),
    n_styles: int = 18,
    style_dim: int = 512,
    coarse_convs: int = 4,
) -> Layout:
    """The layout of an IR-SE encoder with these stage widths and depths (defaults: the published IR-SE-50)."""
    if len(widths) != STAGES or len(units) != STAGES or any(a == b for a, b in itertools.pairwise(widths)):
        raise ValueError("need 4 stages whose consecutive widths differ (stages are told apart by width)")
    body, cin = [], widths[0]
    for width, count in zip(widths, units, strict=True):
        se = max(width // 16, 1)
        body += [(cin, width, 2, se)] + [(width, width, 1, se)] * (count - 1)
        cin = width
    ends = [sum(units[: i + 1]) - 1 for i in range(1, STAGES)]
    convs = tuple(coarse_convs + _level(i) for i in range(n_styles))
    return Layout(3, tuple(body), (ends[0], ends[1], ends[2]), convs, style_dim)
