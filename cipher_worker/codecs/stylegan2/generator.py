"""The StyleGAN2 generator (mapping network + synthesis), loading rosinality checkpoints.

A rosinality ``stylegan2-pytorch`` checkpoint is a dict with ``g_ema`` (the generator's
state dict) and ``latent_avg``; converted NVlabs weights have exactly these, training
checkpoints carry more. Sizes are read off the tensors (resolution from the number of
to-RGB layers, channel widths per resolution, mapping depth, style width), so 256 and
1024 px, channel multipliers 1 and 2, ADA's 2-layer mapping and tiny test models all load
the same way; every key and shape is then checked strictly.

Synthesis always uses the checkpoint's fixed noise buffers: the same W+ renders the same
pixels, which is what makes decrypt-and-render reproduce the encrypt side exactly.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import BadCheckpoint
from .checkpoint import load_strict, read_checkpoint, require
from .ops import EqualLinear, PixelNorm, StyledConv, ToRGB

WHAT = "StyleGAN2 checkpoint"
MAPPING_LR = 0.01  # rosinality's lr_mlp: mapping weights are stored ×100


@dataclass(frozen=True)
class GeneratorSpec:
    size: int  # output side in pixels, a power of two ≥ 8
    style_dim: int  # width of z and W
    n_mlp: int  # mapping layers
    channels: tuple[int, ...]  # feature channels at 4, 8, …, size px

    @property
    def n_latent(self) -> int:
        """W+ layers: one style per convolution and to-RGB layer, shared as in StyleGAN2."""
        return 2 * int(math.log2(self.size)) - 2


class Generator(nn.Module):
    def __init__(self, spec: GeneratorSpec):
        super().__init__()
        self.spec = spec
        dim = spec.style_dim
        self.style = nn.Sequential(
            PixelNorm(), *(EqualLinear(dim, dim, lr_mul=MAPPING_LR, activate=True) for _ in range(spec.n_mlp))
        )
        ch = spec.channels
        self.input = ConstantInput(ch[0])
        self.conv1 = StyledConv(ch[0], ch[0], dim)
        self.to_rgb1 = ToRGB(ch[0], dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        for c_in, c_out in itertools.pairwise(ch):
            self.convs.append(StyledConv(c_in, c_out, dim, upsample=True))
            self.convs.append(StyledConv(c_out, c_out, dim))
            self.to_rgbs.append(ToRGB(c_out, dim))
        self.noises = nn.Module()
        for i in range(2 * len(ch) - 1):  # one fixed noise image per convolution
            res = 4 * 2 ** ((i + 1) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))

    @property
    def size(self) -> int:
        return self.spec.size

    @property
    def n_latent(self) -> int:
        return self.spec.n_latent

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """(N, style_dim) z → (N, style_dim) W."""
        return self.style(z)

    def forward(self, wplus: torch.Tensor) -> torch.Tensor:
        """(N, n_latent, style_dim) W+ → (N, 3, size, size) RGB, nominally in [-1, 1]."""
        noise = [getattr(self.noises, f"noise_{i}") for i in range(2 * len(self.spec.channels) - 1)]
        # channels-last all the way: oneDNN's fastest layout for these convolutions (~8% at batch 4)
        x = self.input(len(wplus)).contiguous(memory_format=torch.channels_last)
        x = self.conv1(x, wplus[:, 0], noise[0])
        skip = self.to_rgb1(x, wplus[:, 1])
        for j, to_rgb in enumerate(self.to_rgbs):
            i = 2 * j + 1  # this block's first style (and noise) index
            x = self.convs[2 * j](x, wplus[:, i], noise[i])
            x = self.convs[2 * j + 1](x, wplus[:, i + 1], noise[i + 1])
            skip = to_rgb(x, wplus[:, i + 2], skip)
        return skip


class ConstantInput(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, 4, 4))

    def forward(self, batch: int) -> torch.Tensor:
        return self.input.expand(batch, -1, -1, -1)


def spec_from_state(state: Mapping[str, torch.Tensor], what: str = WHAT) -> GeneratorSpec:
    """Read the architecture off a ``g_ema`` state dict (see the module docstring)."""
    if "input.input" not in state or "conv1.conv.modulation.weight" not in state:
        raise BadCheckpoint(f"{what} is not a rosinality StyleGAN2 generator (no input.input / conv1 tensors)")
    n_rgb = len({m.group(1) for k in state if (m := re.match(r"to_rgbs\.(\d+)\.", k))})
    n_mlp = len({m.group(1) for k in state if (m := re.match(r"style\.(\d+)\.weight$", k))})
    if n_rgb < 1 or n_mlp < 1:
        raise BadCheckpoint(f"{what} has {n_rgb} to-RGB blocks and {n_mlp} mapping layers; a generator needs both")
    channels = [int(state["input.input"].shape[1])]
    for j in range(n_rgb):
        key = f"convs.{2 * j}.conv.weight"
        if key not in state:
            raise BadCheckpoint(f"{what} does not match the expected layout; missing: {key}")
        channels.append(int(state[key].shape[1]))
    style_dim = int(state["conv1.conv.modulation.weight"].shape[1])
    return GeneratorSpec(size=4 * 2**n_rgb, style_dim=style_dim, n_mlp=n_mlp, channels=tuple(channels))


def build_generator(
    state: Mapping[str, torch.Tensor], device: torch.device | str = "cpu", what: str = WHAT
) -> Generator:
    """A generator with exactly the weights in ``state`` (strict), in eval mode on ``device``."""
    spec = spec_from_state(state, what)
    with torch.device("meta"):  # no random initialisation: every tensor comes from the checkpoint
        generator = Generator(spec)
    generator.to_empty(device="cpu")
    load_strict(generator, state, what)
    return generator.eval().requires_grad_(False).to(device)


def load_generator(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> Generator:
    """Read a rosinality checkpoint's ``g_ema`` generator. Its ``latent_avg``, when present, is
    only checked: the codec derives its own W statistics from the mapping network."""
    data = read_checkpoint(path, WHAT)
    if "state_dict" in data and "g_ema" not in data:
        raise BadCheckpoint(f"{path} is an e4e/pSp encoder checkpoint, not a generator; pass it as VEIL_E4E_CKPT")
    what = f"{WHAT} {path}"
    generator = build_generator(require(data, "g_ema", WHAT, path), device, what)
    latent_avg = data.get("latent_avg")
    if latent_avg is not None and (
        not isinstance(latent_avg, torch.Tensor) or latent_avg.shape[-1] != generator.spec.style_dim
    ):
        shape = tuple(latent_avg.shape) if isinstance(latent_avg, torch.Tensor) else type(latent_avg).__name__
        raise BadCheckpoint(f"{what}: latent_avg has shape {shape}, expected (…, {generator.spec.style_dim})")
    return generator


def channels_for(size: int, channel_multiplier: int = 2) -> tuple[int, ...]:
    """rosinality's widths at 4, 8, …, ``size`` px: 512 up to 32 px, then 256·cm at 64 px, halving per octave."""
    return tuple(
        512 if res <= 32 else 16384 * channel_multiplier // res
        for res in (4 * 2**i for i in range(int(math.log2(size)) - 1))
    )
