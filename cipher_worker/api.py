"""What the web app and the CLI call. Models load once per process (``get_pipeline``)."""

from __future__ import annotations

import functools
import threading

from .codecs import load_codec
from .envelope import Fidelity
from .pipeline import AnonymizedPhoto, Pipeline, Progress, RecoveredPhoto

_lock = threading.Lock()


@functools.cache
def _pipeline(codec: str | None) -> Pipeline:
    return Pipeline(load_codec(codec))


def get_pipeline(codec: str | None = None) -> Pipeline:
    """The process-wide pipeline for ``codec`` (default: ``$VEIL_CODEC`` or dcgan64)."""
    with _lock:
        return _pipeline(codec)


def anonymize_photo(
    data: bytes,
    album_public: bytes,
    *,
    fidelity: Fidelity = "exact",
    fmt: str | None = None,
    progress: Progress | None = None,
    codec: str | None = None,
) -> AnonymizedPhoto:
    return get_pipeline(codec).anonymize(data, album_public, fidelity=fidelity, fmt=fmt, progress=progress)


def recover_photo(
    image: bytes,
    envelope: bytes,
    *,
    album_private: bytes | None = None,
    content_key: bytes | None = None,
    decoy_password: str | None = None,
    codec: str | None = None,
) -> RecoveredPhoto:
    return get_pipeline(codec).recover(
        image, envelope, album_private=album_private, content_key=content_key, decoy_password=decoy_password
    )
