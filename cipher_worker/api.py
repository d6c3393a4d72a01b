"""What the web app and the CLI call. Models load once per process (``get_pipeline``)."""

from __future__ import annotations

import functools
import threading

from .ciphers import DEFAULT_CIPHER, cipher_name, load_cipher
from .codecs import CodecConfig, codec_config, load_codec
from .envelope import Fidelity
from .exact import RecoveredPhoto
from .pipeline import AnonymizedPhoto, Pipeline, Progress

_lock = threading.Lock()


@functools.cache
def _pipeline(config: CodecConfig, cipher: str) -> Pipeline:
    if cipher != DEFAULT_CIPHER:  # the codec loads once, whichever ciphers anonymize with it
        codec = _pipeline(config, DEFAULT_CIPHER).codec
        return Pipeline(codec, cipher=load_cipher(cipher, codec))
    return Pipeline(load_codec(config))


def get_pipeline(codec: str | CodecConfig | None = None, cipher: str | None = None) -> Pipeline:
    """The process-wide pipeline for ``codec`` (default: the environment's, see ``codecs``),
    one per codec configuration (checkpoints, identity layers), anonymizing with ``cipher``
    (default: the torus cipher; recovery uses whichever cipher a photo names)."""
    config = codec if isinstance(codec, CodecConfig) else codec_config(codec)
    name = cipher_name(cipher)
    with _lock:
        return _pipeline(config, name)


def anonymize_photo(
    data: bytes,
    album_public: bytes,
    *,
    fidelity: Fidelity = "exact",
    fmt: str | None = None,
    progress: Progress | None = None,
    codec: str | CodecConfig | None = None,
    cipher: str | None = None,
) -> AnonymizedPhoto:
    return get_pipeline(codec, cipher).anonymize(data, album_public, fidelity=fidelity, fmt=fmt, progress=progress)


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
