"""Latent codecs, by id. ``load_codec`` is the one way to get one.

A codec is configured by the environment: ``VEIL_CODEC`` (``dcgan64``, the default, or
``stylegan2``) and, for ``stylegan2``, ``VEIL_STYLEGAN2_CKPT`` (rosinality generator),
``VEIL_E4E_CKPT`` (e4e/pSp encoder), ``VEIL_STYLEGAN2_IDENTITY_LAYERS`` (e.g. ``6-9``) and
``VEIL_STYLEGAN2_ENCODER_BF16=1`` (run the encoder in bfloat16: twice as fast on CPUs with
AVX512-BF16 or AMX, slower on others). The CLI's flags override the environment.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ..errors import BadInput
from .base import Codec, Latents

DEFAULT_CODEC = "dcgan64"
CODECS = ("dcgan64", "stylegan2")


class CodecConfig(NamedTuple):
    name: str
    stylegan2_ckpt: str | None = None
    e4e_ckpt: str | None = None
    identity_layers: str | None = None
    encoder_bf16: bool = False


def codec_config(
    name: str | None = None,
    *,
    stylegan2_ckpt: str | None = None,
    e4e_ckpt: str | None = None,
    identity_layers: str | None = None,
) -> CodecConfig:
    """The codec to build: the arguments, else the environment, else the default. Giving a
    stylegan2 setting without a name implies ``stylegan2``."""
    env = os.environ.get
    if not name and (stylegan2_ckpt or e4e_ckpt or identity_layers):
        name = "stylegan2"
    name = name or env("VEIL_CODEC") or DEFAULT_CODEC
    if name not in CODECS:
        raise BadInput(f"unknown codec {name!r}; available: {', '.join(CODECS)}")
    if name == "dcgan64":
        return CodecConfig(name)
    return CodecConfig(
        name,
        str(stylegan2_ckpt or env("VEIL_STYLEGAN2_CKPT") or "") or None,
        str(e4e_ckpt or env("VEIL_E4E_CKPT") or "") or None,
        identity_layers or env("VEIL_STYLEGAN2_IDENTITY_LAYERS") or None,
        env("VEIL_STYLEGAN2_ENCODER_BF16", "").lower() in ("1", "true", "yes"),
    )


def load_codec(name: str | CodecConfig | None = None, device: str | None = None) -> Codec:
    """Build the codec named by ``name`` (or a full ``CodecConfig``; default: the environment)."""
    config = name if isinstance(name, CodecConfig) else codec_config(name)
    if config.name == "dcgan64":
        from .dcgan64 import DCGAN64Codec

        return DCGAN64Codec(device)
    from .stylegan2.codec import DEFAULT_IDENTITY_LAYERS, StyleGAN2Codec, parse_layers

    layers = parse_layers(config.identity_layers) if config.identity_layers else DEFAULT_IDENTITY_LAYERS
    return StyleGAN2Codec(
        config.stylegan2_ckpt, config.e4e_ckpt, identity_layers=layers, encoder_bf16=config.encoder_bf16, device=device
    )


__all__ = ["CODECS", "DEFAULT_CODEC", "Codec", "CodecConfig", "Latents", "codec_config", "load_codec"]
