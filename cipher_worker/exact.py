"""The part of recovery that needs no model: opening a photo's envelope with its key, and
putting back the original pixels an exact-fidelity envelope carries.

An exact-fidelity photo comes back bit for bit from the envelope alone, so the CLI recovers it
without loading a codec (:func:`recover_exact`); a latent-fidelity photo, or a decoy, needs the
codec to render its faces (:meth:`cipher_worker.pipeline.Pipeline.recover`).
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from . import cipher, envelope, keys
from .errors import EnvelopeError, WrongKey
from .imageio import DecodedImage, decode_image


@dataclass(frozen=True)
class RecoveredPhoto:
    pixels: np.ndarray  # (H, W, 3) uint8 — never written anywhere by this package
    faces: int
    decoy: bool
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage


class Stopwatch:
    """Seconds spent per stage, accumulated over ``with watch("stage"):`` blocks."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def face_aad(nonce: bytes, index: int, box: tuple[int, int, int, int]) -> bytes:
    return b"veil/v1/face-pixels" + nonce + struct.pack("<I4i", index, *box)


def touched_pixels(original: np.ndarray, box: tuple[int, int, int, int], weights: np.ndarray) -> np.ndarray:
    """Original pixels the composite may change, as (h, w, 4) RGBA with A = 255 where
    touched; untouched pixels are zero so they cost nothing and reveal nothing."""
    x0, y0, x1, y1 = box
    touched = weights > 0
    rgba = np.zeros((y1 - y0, x1 - x0, 4), np.uint8)
    rgba[touched, :3] = original[y0:y1, x0:x1][touched]
    rgba[touched, 3] = 255
    return rgba


def _untouch(image: np.ndarray, box: tuple[int, int, int, int], rgba: np.ndarray) -> None:
    x0, y0, x1, y1 = box
    region = image[y0:y1, x0:x1]
    touched = rgba[..., 3] == 255
    region[touched] = rgba[touched, :3]


def open_recovery(
    image: bytes,
    env: envelope.Envelope,
    *,
    album_private: bytes | None,
    content_key: bytes | None,
    decoy_password: str | None,
    watch: Stopwatch,
) -> tuple[DecodedImage, bytes, bool]:
    """The photo's pixels, its content key and whether that key is a decoy's (derived from
    ``decoy_password`` when no real key opens the envelope; WrongKey without one)."""
    with watch("decode"):
        photo = decode_image(image)
    if photo.size != env.image_size:
        raise EnvelopeError(f"the recovery data is for a {env.image_size[0]}×{env.image_size[1]} image, not this one")
    decoy = False
    with watch("open"):
        try:
            if content_key is None:
                if album_private is None:
                    raise WrongKey("no key was given")
                content_key = keys.open_content_key(env.sealed_content_key, album_private)
            envelope.verify_envelope(env, content_key)
        except WrongKey:
            if decoy_password is None:
                raise
            content_key, decoy = cipher.decoy_content_key(decoy_password, env.nonce), True
    return photo, content_key, decoy


def restore_face(out: np.ndarray, env: envelope.Envelope, index: int, region_key: bytes) -> None:
    """Put face ``index``'s sealed original pixels back into ``out``."""
    record = env.faces[index]
    assert record.pixels is not None
    aad = face_aad(env.nonce, index, record.box)
    _untouch(out, record.box, envelope.open_face_pixels(region_key, record.pixels, aad))


def recover_exact(
    image: bytes, envelope_bytes: bytes, *, album_private: bytes | None = None, content_key: bytes | None = None
) -> RecoveredPhoto | None:
    """The original photo from an exact-fidelity envelope, with no model; None when some face
    has no stored pixels (latent fidelity: the codec must render it). WrongKey for a wrong key."""
    watch = Stopwatch()
    with watch("open"):
        env = envelope.Envelope.from_bytes(envelope_bytes)
    if any(r.pixels is None for r in env.faces):
        return None
    photo, content_key, _ = open_recovery(
        image, env, album_private=album_private, content_key=content_key, decoy_password=None, watch=watch
    )
    out = photo.pixels.copy()
    with watch("composite"):
        for i in reversed(range(len(env.faces))):  # undo in the opposite order of anonymization
            restore_face(out, env, i, cipher.derive_region_key(content_key, env.nonce, i))
    return RecoveredPhoto(out, len(env.faces), False, watch.seconds)
