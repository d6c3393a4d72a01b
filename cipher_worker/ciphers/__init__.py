"""Latent ciphers, by id. ``load_cipher`` is the one way to get one; the torus cipher is the default.

A cipher belongs to a codec: it works on that codec's identity coordinates, and a learned one
has weights trained for them (``ciphers/weights/<cipher>_<codec>.pt``). The envelope records
the cipher's id and weights fingerprint; recovery loads the cipher it names and refuses
other weights (:class:`~cipher_worker.errors.CipherMismatch`).

Built: ``torus`` (exact, a group; :mod:`cipher_worker.cipher`), ``ifadit`` (a
key-conditioned coupling flow), ``riddle`` (a transformer encryptor, its own decryptor) and
``facersa`` (a password mapper with separate decryption passwords and learned key algebra)
and ``fit`` (a password-conditioned image-to-image transformer on the aligned crops: a
pixel-space cipher, :attr:`~cipher_worker.ciphers.base.Cipher.space` ``"pixels"``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import BadInput
from .base import NO_WEIGHTS, Cipher, FaceSecret, KeyAlgebra
from .torus import TORUS_ID, TorusCipher

if TYPE_CHECKING:
    from ..codecs.base import Codec
    from .learned import LearnedCipher

DEFAULT_CIPHER = TORUS_ID
CIPHERS = ("torus", "ifadit", "riddle", "facersa", "fit")
PLANNED: tuple[str, ...] = ()  # the papers' ciphers still to come
WEIGHTS_DIR = Path(__file__).parent / "weights"


def cipher_name(name: str | None) -> str:
    """``name`` (default: the torus cipher), or BadInput naming what there is."""
    name = name or DEFAULT_CIPHER
    if name in PLANNED:
        raise BadInput(f"the {name} cipher is not built yet; available: {', '.join(CIPHERS)}")
    if name not in CIPHERS:
        raise BadInput(f"unknown cipher {name!r}; available: {', '.join(CIPHERS)}")
    return name


def weights_path(name: str, codec_id: str) -> Path:
    """Where a learned cipher's weights for a codec live."""
    return WEIGHTS_DIR / f"{name}_{codec_id}.pt"


def load_cipher(name: str | None, codec: Codec) -> Cipher:
    """The cipher ``name`` (default torus) for ``codec``'s identity coordinates."""
    name = cipher_name(name)
    if name == TORUS_ID:
        return TorusCipher(codec.identity_dim)
    if name == "fit":  # pixel space: weights for the codec's crops
        from .fit import FITCipher

        return FITCipher.from_file(weights_path(name, codec.id), codec.id, codec.crop_size)
    return _learned(name).from_file(weights_path(name, codec.id), codec.id, codec.identity_dim)


def _learned(name: str) -> type[LearnedCipher]:
    # imported on demand: the torus cipher needs no torch network
    if name == "ifadit":
        from .ifadit import IFADITCipher

        return IFADITCipher
    if name == "riddle":
        from .riddle import RiDDLECipher

        return RiDDLECipher
    from .facersa import FaceRSACipher

    return FaceRSACipher


__all__ = [
    "CIPHERS",
    "DEFAULT_CIPHER",
    "NO_WEIGHTS",
    "PLANNED",
    "Cipher",
    "FaceSecret",
    "KeyAlgebra",
    "TorusCipher",
    "cipher_name",
    "load_cipher",
    "weights_path",
]
