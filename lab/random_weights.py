"""Random weights in the published checkpoint formats (rosinality's StyleGAN2, e4e and pSp),
for tests and the stylegan2 benchmark: they load and run like real ones, and speed and
plumbing do not depend on the weights' values."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cipher_worker.codecs.stylegan2.encoder import StyleEncoder, make_layout
from cipher_worker.codecs.stylegan2.generator import Generator, GeneratorSpec
from cipher_worker.codecs.stylegan2.ops import EqualLinear

BN_RANGES = (("weight", 0.5, 1.5), ("bias", -0.1, 0.1), ("running_mean", -0.1, 0.1), ("running_var", 0.5, 1.5))


def random_generator_state(spec: GeneratorSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """A freshly initialised generator's state dict (rosinality's initialisation): for tests
    and benchmarks that need real-format weights without real weights."""
    with torch.random.fork_rng():  # leave the caller's random state alone
        torch.manual_seed(seed)
        return Generator(spec).state_dict()


def write_random_checkpoint(
    path: str | os.PathLike[str],
    kind: str,
    *,
    widths: tuple[int, ...] = (64, 128, 256, 512),
    units: tuple[int, ...] = (3, 4, 14, 3),
    n_styles: int = 18,
    style_dim: int = 512,
    coarse_convs: int = 4,
    decoder_state: Mapping[str, Tensor] | None = None,
    latent_avg: bool = True,
    seed: int = 0,
) -> Path:
    """Write an e4e (``kind="e4e"``) or pSp (``"psp"``) checkpoint with random weights, laid out exactly as
    the originals' training code saves it. The defaults are the published IR-SE-50 with 18 styles (≈1 GB);
    the input size is 16·2^coarse_convs. BatchNorm statistics are random near mean 0 / variance 1, so
    they matter and the outputs stay in a sensible range. For tests and benchmarks."""
    if kind == "e4e" and n_styles % 2:
        raise ValueError("e4e checkpoints give the generator size, not n_styles: n_styles must be even")
    encoder = StyleEncoder(kind, make_layout(widths, units, n_styles, style_dim, coarse_convs))
    gen = torch.Generator().manual_seed(seed)

    def fill(tensor: Tensor, low: float, high: float) -> None:
        tensor.copy_(torch.rand(tensor.shape, generator=gen) * (high - low) + low)

    with torch.no_grad():
        for module in encoder.modules():
            if isinstance(module, nn.BatchNorm2d):
                for name, low, high in BN_RANGES:
                    fill(getattr(module, name), low, high)
            elif isinstance(module, nn.PReLU):
                fill(module.weight, 0.1, 0.3)
            elif isinstance(module, nn.Conv2d | EqualLinear):
                fan_in = module.weight[0].numel()
                scale = 1.0 if isinstance(module, EqualLinear) else 1 / math.sqrt(fan_in)  # EqualLinear scales itself
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * scale)
                if module.bias is not None:
                    fill(module.bias, -0.1, 0.1)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state |= {f"decoder.{k}": v for k, v in (decoder_state or {}).items()}
    size = 2 ** ((n_styles + 2) // 2)  # the generator resolution that has n_styles W+ layers
    opts: dict[str, Any] = {"exp_dir": "experiments/random", "dataset_type": "ffhq_encode"}
    if kind == "e4e":
        opts |= {"encoder_type": "Encoder4Editing", "stylegan_size": size, "start_from_latent_avg": latent_avg}
    else:
        opts |= {
            "encoder_type": "GradualStyleEncoder",
            "input_nc": 3,
            "label_nc": 0,
            "output_size": size,
            "n_styles": n_styles,
            "start_from_latent_avg": latent_avg,
            "learn_in_w": False,
        }
    checkpoint: dict[str, Any] = {"state_dict": state, "opts": opts}
    if latent_avg:  # saved exactly when start_from_latent_avg, already repeated to every layer
        checkpoint["latent_avg"] = torch.randn(1, style_dim, generator=gen).repeat(n_styles, 1)
    torch.save(checkpoint, path)
    return Path(path)
