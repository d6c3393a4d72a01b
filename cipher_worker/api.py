"""What the web app and the CLI call. Models load once per process (``get_pipeline``)."""

from __future__ import annotations

import functools
import threading

from .codecs import CodecConfig, codec_config, load_codec
from .envelope import Fidelity
from .exact import RecoveredPhoto
from .pipeline import AnonymizedPhoto, Pipeline, Progress

_lock = threading.Lock()


@functools.cache
def _pipeline(config: CodecConfig) -> Pipeline:
    return Pipeline(load_codec(config))


def get_pipeline(codec: str | CodecConfig | None = None) -> Pipeline:
    """The process-wide pipeline for ``codec`` (default: the environment's, see ``codecs``),
    one per codec configuration (checkpoints, identity layers)."""
    config = codec if isinstance(codec, CodecConfig) else codec_config(codec)
    with _lock:
        return _pipeline(config)


def anonymize_photo(
    data: bytes,
    album_public: bytes,
    *,
    fidelity: Fidelity = "exact",
    fmt: str | None = None,
    progress: Progress | None = None,
    codec: str | CodecConfig | None = None,
) -> AnonymizedPhoto:
    return get_pipeline(codec).anonymize(data, album_public, fidelity=fidelity, fmt=fmt, progress=progress)


def recover_photo(
    image: bytes,
    envelope: bytes,
    *,
    album_private: bytes | None = None,
    content_key: bytes | None = None,
    decoy_password: str | None = None,
    codec: str | CodecConfig | None = None,
) -> RecoveredPhoto:
    return get_pipeline(codec).recover(
        image, envelope, album_private=album_private, content_key=content_key, decoy_password=decoy_password
    )
