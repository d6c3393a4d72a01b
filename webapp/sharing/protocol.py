"""What crosses Redis and the websocket when someone unlocks an album's real faces.

One unlock is one *viewing session*: the web process makes a random 32-byte session key K,
and for each photo seals an :class:`UnlockRequest` (K and the photo's opened content key, or
K and the typed password in decoy mode) to the workers' transit key (``transit.put_unlock``).
The worker recovers the photo and leaves it in the viewing's mailbox sealed under K
(:func:`seal_result`, AES-256-GCM, the session and photo ids as associated data); the
consumer opens it and sends it to the browser. Redis only ever holds ciphertext.

Websocket messages (text frames are JSON ``{"type": ..., "data": {...}}``):

* browser → server: ``{"type": "unlock", "data": {"slot": int, "password": str, "first": [photo
  id, …]}}`` (``first``, optional: the photos in view, recovered before the rest),
  ``{"type": "look", "data": {"photos": [photo id, …]}}`` (scrolled: these photos next) and
  ``{"type": "lock"}`` (forget the session key; results still on their way are dropped);
* ``unlock.started`` ``{session, photos: [photo id, …]}``: the photos being recovered;
* ``unlock.refused`` ``{code, message}``: a sentence to show (wrong password, too many tries,
  revoked or expired recipient, rotated link, …); ``code`` is one of :data:`REFUSAL_CODES`;
* ``unlock.failed`` ``{session, photo_id, message}``: one photo could not be recovered;
* ``unlock.finished`` ``{session, recovered, failed}``: nothing more will come;
* a binary frame per recovered photo: u32 big-endian header length, the header as UTF-8 JSON
  ``{"type": "unlock.photo", "data": {session, photo_id, content_type}}``, then the image file.

A decoy result is framed exactly like a real one: the page cannot tell them apart.
"""

from __future__ import annotations

import json
import os
import struct
import unicodedata
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cipher_worker.errors import WrongKey

SESSION_KEY_BYTES: Final = 32

UNLOCK: Final = "unlock"
LOCK: Final = "lock"
LOOK: Final = "look"
STARTED: Final = "unlock.started"
REFUSED: Final = "unlock.refused"
FAILED: Final = "unlock.failed"
FINISHED: Final = "unlock.finished"
PHOTO: Final = "unlock.photo"

REFUSAL_CODES: Final = frozenset(
    {"wrong_password", "rate_limited", "revoked", "expired", "link_gone", "bad_request", "unavailable", "busy"}
)

CONTENT_TYPES: Final = {"PNG": "image/png", "JPEG": "image/jpeg"}

# --- the sealed request a worker takes from the transit store -----------------------------

_REQUEST_VERSION = 1
_CONTENT_KEY, _DECOY = 1, 2
_REQUEST_HEADER = struct.Struct("<BB32sH")  # version, kind, session key, secret length
# Requests are padded to whole blocks so that Redis cannot tell a decoy (a password) from a
# real unlock (a 32-byte content key) by the size of the sealed entry.
_REQUEST_BLOCK = 256


@dataclass(frozen=True, repr=False)
class UnlockRequest:
    """A worker's instructions for one photo: the session key, and either the photo's content
    key (32 bytes) or, in decoy mode, the password that was typed."""

    session_key: bytes
    content_key: bytes | None = None
    decoy_password: str | None = None

    def __post_init__(self) -> None:
        if len(self.session_key) != SESSION_KEY_BYTES:
            raise ValueError("a session key is 32 bytes")
        if (self.content_key is None) == (self.decoy_password is None):
            raise ValueError("an unlock request carries a content key or a decoy password, not both or neither")
        if self.content_key is not None and len(self.content_key) != 32:
            raise ValueError("a content key is 32 bytes")

    def to_bytes(self) -> bytes:
        if self.content_key is not None:
            kind, secret = _CONTENT_KEY, self.content_key
        else:
            assert self.decoy_password is not None
            kind, secret = _DECOY, unicodedata.normalize("NFC", self.decoy_password).encode("utf-8")
        body = _REQUEST_HEADER.pack(_REQUEST_VERSION, kind, self.session_key, len(secret)) + secret
        return body + bytes(-len(body) % _REQUEST_BLOCK)

    @classmethod
    def from_bytes(cls, data: bytes) -> UnlockRequest:
        if len(data) < _REQUEST_HEADER.size:
            raise ValueError("this is not an unlock request")
        version, kind, session_key, length = _REQUEST_HEADER.unpack_from(data)
        secret = data[_REQUEST_HEADER.size : _REQUEST_HEADER.size + length]
        if version != _REQUEST_VERSION or len(secret) != length or kind not in (_CONTENT_KEY, _DECOY):
            raise ValueError("this is not an unlock request")
        if kind == _CONTENT_KEY:
            return cls(session_key, content_key=secret)
        return cls(session_key, decoy_password=secret.decode("utf-8"))

    def __repr__(self) -> str:  # never print a key or a password, even in a traceback
        return "UnlockRequest(…)"


# --- the sealed result a worker leaves in the viewing's mailbox ---------------------------

_NONCE_BYTES = 12


def _result_aad(session_id: str, photo_id: str) -> bytes:
    return f"veil/v1/unlock-result/{session_id}/{photo_id}".encode("ascii")


def seal_result(session_key: bytes, session_id: str, photo_id: str, data: bytes) -> bytes:
    """nonce (12) | AES-256-GCM(data) + tag, bound to this session and photo."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(session_key).encrypt(nonce, data, _result_aad(session_id, photo_id))


def open_result(session_key: bytes, session_id: str, photo_id: str, sealed: bytes) -> bytes:
    """Raises WrongKey for another session's key, another photo, or altered bytes."""
    try:
        return AESGCM(session_key).decrypt(
            sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _result_aad(session_id, photo_id)
        )
    except (InvalidTag, ValueError) as exc:
        raise WrongKey("this recovered photo was sealed for another viewing session") from exc


# --- websocket frames ----------------------------------------------------------------------

_FRAME_HEADER = struct.Struct(">I")


def message(kind: str, **data: Any) -> dict[str, Any]:
    return {"type": kind, "data": data}


def refusal(code: str, text: str) -> dict[str, Any]:
    assert code in REFUSAL_CODES, code
    return message(REFUSED, code=code, message=text)


def photo_frame(session_id: str, photo_id: str, content_type: str, image: bytes) -> bytes:
    """The binary websocket frame that carries one recovered photo to the page."""
    header = json.dumps(
        message(PHOTO, session=session_id, photo_id=photo_id, content_type=content_type), separators=(",", ":")
    ).encode("utf-8")
    return _FRAME_HEADER.pack(len(header)) + header + image


def parse_photo_frame(frame: bytes) -> tuple[dict[str, Any], bytes]:
    """The header and the image of a :func:`photo_frame` (what the page's script does)."""
    (length,) = _FRAME_HEADER.unpack_from(frame)
    start = _FRAME_HEADER.size
    return json.loads(frame[start : start + length]), frame[start + length :]
