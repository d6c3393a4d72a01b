"""Latent codecs, by id. ``load_codec`` is the one way to get one."""

from __future__ import annotations

import os

from ..errors import BadInput
from .base import Codec, Latents

DEFAULT_CODEC = "dcgan64"


def load_codec(name: str | None = None, device: str | None = None) -> Codec:
    """Build the codec named by ``name`` or ``$VEIL_CODEC`` (default ``dcgan64``)."""
    name = name or os.environ.get("VEIL_CODEC") or DEFAULT_CODEC
    if name == "dcgan64":
        from .dcgan64 import DCGAN64Codec

        return DCGAN64Codec(device)
    raise BadInput(f"unknown codec {name!r}; available: dcgan64")


__all__ = ["DEFAULT_CODEC", "Codec", "Latents", "load_codec"]
