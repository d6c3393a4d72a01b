"""Tiny random StyleGAN2 + e4e/pSp checkpoints in the published formats, for tests.

64 px, 10 W+ layers of 32 (FaceRSA's identity layers 6–9 of 18 become layers 3–5 here); an
IR-SE encoder with 4 narrow stages and a 64 px input. They load and run like real ones in
a fraction of a second; their faces are noise, which is all a format or plumbing test needs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cipher_worker.codecs.stylegan2.generator import GeneratorSpec
from lab.random_weights import random_generator_state, write_random_checkpoint

SPEC = GeneratorSpec(size=64, style_dim=32, n_mlp=2, channels=(32, 32, 16, 16, 8))
ENCODER = {"widths": (8, 16, 24, 32), "units": (1, 2, 2, 1), "n_styles": 10, "style_dim": 32, "coarse_convs": 2}


def write_generator(path: Path, seed: int = 0) -> Path:
    torch.save({"g_ema": random_generator_state(SPEC, seed), "latent_avg": torch.zeros(SPEC.style_dim)}, path)
    return path


def write_checkpoints(folder: Path) -> dict[str, Path]:
    """generator, e4e and psp (separate files), e4e_with_decoder (one file), other_generator."""
    return {
        "generator": write_generator(folder / "g.pt"),
        "e4e": write_random_checkpoint(folder / "e4e.pt", "e4e", **ENCODER),  # type: ignore[arg-type]
        "psp": write_random_checkpoint(folder / "psp.pt", "psp", **ENCODER, seed=1),  # type: ignore[arg-type]
        "e4e_with_decoder": write_random_checkpoint(
            folder / "e4e_full.pt",
            "e4e",
            **ENCODER,  # type: ignore[arg-type]
            decoder_state=random_generator_state(SPEC, 2),
        ),
        "other_generator": write_generator(folder / "g2.pt", seed=3),
    }
