"""Album keys: X25519 key pairs, sealing to a public key, password key slots and key files.

Sealed blob (ECIES; ``seal`` / ``open_sealed``)::

    eph_pub (32) | nonce (12) | AES-256-GCM ciphertext + tag (len(plaintext) + 16)

The AES key is HKDF-SHA256(X25519(eph, recipient), salt = eph_pub | recipient_pub,
info = b"veil/v1/seal/" + context); ``context`` is also the GCM associated data, so a blob
sealed for one purpose does not open as another.

Key slot (``KeySlot.to_bytes``), little-endian, 94 bytes for a 32-byte key::

    offset  size  field
    0       4     magic b"VKSL"
    4       1     slot format version (1)
    5       1     KDF id (1 = Argon2id, version 0x13)
    6       4     time_cost (u32, passes)
    10      4     memory_cost (u32, KiB)
    14      4     parallelism (u32, lanes)
    18      16    salt
    34      12    AES-GCM nonce
    46      rest  AES-256-GCM ciphertext + tag of the raw private key

The wrapping key is Argon2id(password, salt, params) of 32 bytes; bytes 0..34 (everything
before the nonce: version, parameters and salt) are the GCM associated data, so a slot whose
parameters were altered does not open. Passwords are NFC-normalised and UTF-8 encoded.

Key files are text, one base64 body between PEM-style lines::

    -----BEGIN VEIL ALBUM PUBLIC KEY-----              (32-byte raw X25519 public key)
    -----BEGIN VEIL ALBUM PRIVATE KEY-----             (32-byte raw X25519 private key)
    -----BEGIN VEIL ENCRYPTED ALBUM PRIVATE KEY-----   (a key slot, as above)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import hashlib
import os
import struct
import unicodedata
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cipher_worker.errors import BadInput, PassphraseRequired, WrongKey
from cipher_worker.turns import FairTurns, Ticket

KEY_BYTES = 32
SALT_BYTES = 16
GCM_NONCE_BYTES = 12
GCM_TAG_BYTES = 16

_SEAL_INFO = b"veil/v1/seal/"
# Argon2 runs at once in one process, at most: each holds its memory cost (64 MiB by default)
# for its whole run, and a web process runs one per request thread, of which it has no bound; so
# a burst of requests that each hash waits its turn here instead of taking a gigabyte at once,
# and the turns are shared fairly between the clients that asked (cipher_worker.turns).
ARGON2_AT_ONCE = max(1, int(os.environ.get("VEIL_ARGON2_AT_ONCE", "0")) or os.cpu_count() or 1)
ARGON2_WAITING_PER_CLIENT = max(1, int(os.environ.get("VEIL_ARGON2_WAITING_PER_CLIENT", "0")) or 4)
ARGON2_PATIENCE = 60.0  # seconds a hash waits for its turn before the request is refused as busy
_argon2_turns = FairTurns(ARGON2_AT_ONCE, max_waiting=ARGON2_WAITING_PER_CLIENT)
# who the next hash is for (names, urgent), or a turn already waited for (turn_before_hashing)
_hashing_for: contextvars.ContextVar[tuple[tuple[str, ...], bool] | Ticket] = contextvars.ContextVar(
    "veil_hashing_for", default=(("anonymous",), False)
)
CONTENT_KEY_CONTEXT = b"content-key"
ALBUM_KEY_CONTEXT = b"album-key"


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost: ``time_cost`` passes, ``memory_cost`` KiB, ``parallelism`` lanes."""

    time_cost: int
    memory_cost: int
    parallelism: int

    def __post_init__(self) -> None:
        # Bounds keep a forged slot from asking for hours of work or gigabytes of memory.
        if not 1 <= self.parallelism <= 16:
            raise BadInput(f"the key slot's Argon2 parallelism {self.parallelism} is not between 1 and 16")
        if not 1 <= self.time_cost <= 32:
            raise BadInput(f"the key slot's Argon2 time cost {self.time_cost} is not between 1 and 32")
        if not 8 * self.parallelism <= self.memory_cost <= 1024 * 1024:
            raise BadInput(
                f"the key slot's Argon2 memory cost {self.memory_cost} KiB is not between "
                f"{8 * self.parallelism} KiB and 1 GiB"
            )


# About 0.19 s on one core of this 2-core machine (measured with a training job running beside it).
DEFAULT_KDF = KdfParams(time_cost=3, memory_cost=64 * 1024, parallelism=1)

_SLOT_MAGIC = b"VKSL"
_SLOT_VERSION = 1
_KDF_ARGON2ID = 1
_SLOT_HEADER = struct.Struct("<4sBBIII16s")  # magic, version, kdf, time, memory, lanes, salt


@dataclass(frozen=True)
class KeySlot:
    """An album private key wrapped by one password: Argon2id ``params`` and ``salt`` (16 bytes)
    give the AES-256-GCM key that sealed ``wrapped`` (key + 16-byte tag) under ``nonce`` (12 bytes)."""

    params: KdfParams
    salt: bytes
    nonce: bytes
    wrapped: bytes

    def __post_init__(self) -> None:
        if len(self.salt) != SALT_BYTES or len(self.nonce) != GCM_NONCE_BYTES:
            raise BadInput("a key slot needs a 16-byte salt and a 12-byte nonce")
        if len(self.wrapped) < GCM_TAG_BYTES:
            raise BadInput("the key slot's wrapped key is too short to be genuine")

    def to_bytes(self) -> bytes:
        """The slot in the binary format of the module docstring."""
        return _slot_header(self.params, self.salt) + self.nonce + self.wrapped

    @classmethod
    def from_bytes(cls, blob: bytes) -> KeySlot:
        """Parse :meth:`to_bytes` output; raises BadInput when ``blob`` is not a key slot."""
        if len(blob) < _SLOT_HEADER.size + GCM_NONCE_BYTES + GCM_TAG_BYTES or blob[:4] != _SLOT_MAGIC:
            raise BadInput("this is not a Veil key slot")
        _, version, kdf, time_cost, memory_cost, parallelism, salt = _SLOT_HEADER.unpack_from(blob)
        if version != _SLOT_VERSION:
            raise BadInput(f"this key slot has format version {version}, which this Veil cannot read")
        if kdf != _KDF_ARGON2ID:
            raise BadInput(f"this key slot uses an unknown key derivation function (id {kdf})")
        params = KdfParams(time_cost, memory_cost, parallelism)
        rest = blob[_SLOT_HEADER.size :]
        return cls(params, salt, rest[:GCM_NONCE_BYTES], rest[GCM_NONCE_BYTES:])

    def __repr__(self) -> str:
        return f"KeySlot(params={self.params!r})"


def generate_album_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as (raw 32-byte private key, raw 32-byte public key)."""
    private = X25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def public_key_from_private(private_raw: bytes) -> bytes:
    """The raw 32-byte public key of a raw 32-byte X25519 private key."""
    return _private_key(private_raw).public_key().public_bytes_raw()


def key_fingerprint(public_raw: bytes) -> str:
    """A short display name of a public key: 16 hex digits of its SHA-256."""
    _check_key_bytes(public_raw, "public")
    return hashlib.sha256(b"veil/v1/fingerprint/" + public_raw).hexdigest()[:16]


def seal(plaintext: bytes, recipient_public: bytes, context: bytes = b"") -> bytes:
    """Encrypt ``plaintext`` so only the holder of ``recipient_public``'s private key can read it.

    Returns eph_pub (32) | nonce (12) | ciphertext + tag (len(plaintext) + 16).
    """
    _check_key_bytes(recipient_public, "public")
    ephemeral = X25519PrivateKey.generate()
    eph_pub = ephemeral.public_key().public_bytes_raw()
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    except ValueError as exc:  # a low-order point: no shared secret exists
        raise BadInput("this is not a usable album public key") from exc
    nonce = os.urandom(GCM_NONCE_BYTES)
    aes = AESGCM(_seal_key(shared, eph_pub, recipient_public, context))
    return eph_pub + nonce + aes.encrypt(nonce, plaintext, context)


def open_sealed(blob: bytes, recipient_private: bytes, context: bytes = b"") -> bytes:
    """Decrypt a :func:`seal` blob; raises WrongKey if the key does not match or the blob was altered."""
    private = _private_key(recipient_private)
    if len(blob) < KEY_BYTES + GCM_NONCE_BYTES + GCM_TAG_BYTES:
        raise BadInput("the sealed data is too short to be genuine")
    header = KEY_BYTES + GCM_NONCE_BYTES
    eph_pub, nonce, ciphertext = blob[:KEY_BYTES], blob[KEY_BYTES:header], blob[header:]
    recipient_public = private.public_key().public_bytes_raw()
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        aes = AESGCM(_seal_key(shared, eph_pub, recipient_public, context))
        return aes.decrypt(nonce, ciphertext, context)
    except (InvalidTag, ValueError) as exc:
        raise WrongKey("this key cannot open the sealed data, or the data has been altered") from exc


def seal_content_key(content_key: bytes, album_public: bytes) -> bytes:
    """Seal a photo's content key to its album's public key."""
    return seal(content_key, album_public, CONTENT_KEY_CONTEXT)


def open_content_key(sealed: bytes, album_private: bytes) -> bytes:
    """Open a content key sealed by :func:`seal_content_key`; raises WrongKey for another album's key."""
    content_key = open_sealed(sealed, album_private, CONTENT_KEY_CONTEXT)
    if len(content_key) != KEY_BYTES:
        raise BadInput("the sealed content key does not have the size of a content key")
    return content_key


def seal_album_key(album_private: bytes, slot_public: bytes) -> bytes:
    """Seal an album private key to a recipient slot's own public key. The slot's private half is
    what the recipient's password wraps, so whoever holds the album key can hand a new one to
    every recipient without knowing their passwords."""
    _check_key_bytes(album_private, "private")
    return seal(album_private, slot_public, ALBUM_KEY_CONTEXT)


def open_album_key(sealed: bytes, slot_private: bytes) -> bytes:
    """Open :func:`seal_album_key` output; raises WrongKey for another slot's key."""
    album_private = open_sealed(sealed, slot_private, ALBUM_KEY_CONTEXT)
    _check_key_bytes(album_private, "private")
    return album_private


def wrap_private_key(private_raw: bytes, password: str, params: KdfParams | None = None) -> KeySlot:
    """Wrap an album private key under ``password`` (Argon2id with ``params``, then AES-256-GCM).
    Without ``params``, :data:`DEFAULT_KDF` as it is at the call (tests make it cheap)."""
    params = params or DEFAULT_KDF
    _check_key_bytes(private_raw, "private")
    if not password:
        raise BadInput("a password cannot be empty")
    salt, nonce = os.urandom(SALT_BYTES), os.urandom(GCM_NONCE_BYTES)
    aes = AESGCM(_password_key(password, salt, params))
    wrapped = aes.encrypt(nonce, private_raw, _slot_header(params, salt))
    return KeySlot(params, salt, nonce, wrapped)


def unwrap_private_key(slot: KeySlot, password: str) -> bytes:
    """The raw private key in ``slot``; raises WrongKey if ``password`` is not the slot's password."""
    aes = AESGCM(_password_key(password, slot.salt, slot.params))
    try:
        private_raw = aes.decrypt(slot.nonce, slot.wrapped, _slot_header(slot.params, slot.salt))
    except InvalidTag as exc:
        raise WrongKey("wrong password for this album key") from exc
    _check_key_bytes(private_raw, "private")
    return private_raw


_PUBLIC_LABEL = "VEIL ALBUM PUBLIC KEY"
_PRIVATE_LABEL = "VEIL ALBUM PRIVATE KEY"
_WRAPPED_LABEL = "VEIL ENCRYPTED ALBUM PRIVATE KEY"
_KINDS = {
    _PUBLIC_LABEL: "an album public key",
    _PRIVATE_LABEL: "an album private key",
    _WRAPPED_LABEL: "an album private key",
}
_MAX_KEY_FILE = 64 * 1024  # far above any key file; stops us reading a photo by mistake


def write_private_key_file(
    path: str | os.PathLike[str],
    private_raw: bytes,
    passphrase: str | None,
    params: KdfParams | None = None,
) -> None:
    """Write an album private key file (mode 0o600), wrapped by ``passphrase`` unless it is None."""
    _check_key_bytes(private_raw, "private")
    if passphrase is None:
        text = _armor(_PRIVATE_LABEL, private_raw)
    else:
        text = _armor(_WRAPPED_LABEL, wrap_private_key(private_raw, passphrase, params).to_bytes())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as out:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode on open, so restrict it before writing
        out.write(text)


def read_private_key_file(path: str | os.PathLike[str], passphrase: str | None) -> bytes:
    """The raw private key in a key file; PassphraseRequired if it is wrapped and no passphrase is given."""
    label, body = _unarmor(path, (_PRIVATE_LABEL, _WRAPPED_LABEL), "an album private key")
    if label == _PRIVATE_LABEL:
        _check_key_body(body, path)
        return body
    name = os.fspath(path)
    if passphrase is None:
        raise PassphraseRequired(f"the key file {name} is protected by a passphrase, and none was given")
    try:
        slot = KeySlot.from_bytes(body)
    except BadInput as exc:
        raise BadInput(f"the key file {name} is damaged: {exc}") from exc
    try:
        return unwrap_private_key(slot, passphrase)
    except WrongKey as exc:
        raise WrongKey(f"wrong passphrase for the key file {name}") from exc


def write_public_key_file(path: str | os.PathLike[str], public_raw: bytes) -> None:
    """Write an album public key file."""
    _check_key_bytes(public_raw, "public")
    Path(path).write_text(_armor(_PUBLIC_LABEL, public_raw), encoding="ascii")


def read_public_key_file(path: str | os.PathLike[str]) -> bytes:
    """The raw 32-byte public key in an album public key file."""
    _, body = _unarmor(path, (_PUBLIC_LABEL,), "an album public key")
    _check_key_body(body, path)
    return body


def _armor(label: str, body: bytes) -> str:
    b64 = base64.b64encode(body).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""])


def _unarmor(path: str | os.PathLike[str], labels: tuple[str, ...], wanted: str) -> tuple[str, bytes]:
    """The label and decoded body of a key file, if its label is one of ``labels``."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_KEY_FILE + 1)
    except FileNotFoundError as exc:
        raise BadInput(f"there is no key file at {name}") from exc
    except OSError as exc:
        raise BadInput(f"the key file {name} cannot be read ({exc.strerror})") from exc
    try:
        lines = [line.strip() for line in raw.decode("ascii").splitlines() if line.strip()]
    except UnicodeDecodeError:
        lines = []
    begin = next((i for i, line in enumerate(lines) if line.startswith("-----BEGIN ")), None)
    if len(raw) > _MAX_KEY_FILE or begin is None or not lines[begin].endswith("-----"):
        raise BadInput(f"{name} is not a Veil key file")
    label = lines[begin][len("-----BEGIN ") : -len("-----")]
    if label not in _KINDS:
        raise BadInput(f"{name} is not a Veil key file")
    if label not in labels:
        raise BadInput(f"{name} holds {_KINDS[label]}, but {wanted} is needed here")
    try:
        end = lines.index(f"-----END {label}-----", begin)
        body = base64.b64decode("".join(lines[begin + 1 : end]), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise BadInput(f"the key file {name} is damaged or incomplete") from exc
    return label, body


def _check_key_body(body: bytes, path: str | os.PathLike[str]) -> None:
    if len(body) != KEY_BYTES:
        raise BadInput(f"the key file {os.fspath(path)} is damaged: its key is not 32 bytes long")


def _check_key_bytes(key: bytes, kind: str) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        raise BadInput(f"an album {kind} key must be 32 bytes long")


def _slot_header(params: KdfParams, salt: bytes) -> bytes:
    """A slot's version, parameters and salt: its AES-GCM associated data."""
    return _SLOT_HEADER.pack(
        _SLOT_MAGIC,
        _SLOT_VERSION,
        _KDF_ARGON2ID,
        params.time_cost,
        params.memory_cost,
        params.parallelism,
        salt,
    )


def _private_key(private_raw: bytes) -> X25519PrivateKey:
    _check_key_bytes(private_raw, "private")
    return X25519PrivateKey.from_private_bytes(private_raw)


def _seal_key(shared: bytes, eph_pub: bytes, recipient_public: bytes, context: bytes) -> bytes:
    hkdf = HKDF(hashes.SHA256(), 32, salt=eph_pub + recipient_public, info=_SEAL_INFO + context)
    return hkdf.derive(shared)


@contextlib.contextmanager
def hashing_for(*clients: str, urgent: bool = False) -> Iterator[None]:
    """Every Argon2 run inside the block is on behalf of ``clients`` (an account, an address, …),
    ``urgent`` when someone waits for it live: its turn comes fairly among theirs
    (:class:`~cipher_worker.turns.FairTurns`); :class:`~cipher_worker.turns.Busy` when these
    clients (the first of them) already have many waiting. Runs outside such a block share one name, ``anonymous``.
    Inside :func:`turn_before_hashing` it changes nothing: the turn is already there."""
    if isinstance(_hashing_for.get(), Ticket):
        yield
        return
    token = _hashing_for.set((clients, urgent))
    try:
        yield
    finally:
        _hashing_for.reset(token)


@contextlib.asynccontextmanager
async def turn_before_hashing(*clients: str, urgent: bool = False) -> AsyncIterator[None]:
    """Wait in the event loop, holding no thread, for a fair Argon2 turn for ``clients``; the
    first hash run inside the block (in a thread it hands work to, too: the context goes with
    it) uses that turn and gives it back as soon as it is done, even if the block has been left
    meanwhile (a cancelled wait for the thread); the block's end gives it back if none started.
    Busy as :func:`hashing_for`."""
    ticket = await _argon2_turns.wait(clients, urgent=urgent, timeout=ARGON2_PATIENCE)
    token = _hashing_for.set(ticket)
    try:
        yield
    finally:
        _hashing_for.reset(token)
        ticket.release()


def _password_key(password: str, salt: bytes, params: KdfParams) -> bytes:
    secret = unicodedata.normalize("NFC", password).encode("utf-8")
    p = params
    claim = _hashing_for.get()
    if isinstance(claim, Ticket) and claim.claim():  # this thread gives the turn back, when its hash is done
        try:
            return hash_secret_raw(secret, salt, p.time_cost, p.memory_cost, p.parallelism, KEY_BYTES, Type.ID)
        finally:
            claim.release(claimed=True)
    clients, urgent = claim if not isinstance(claim, Ticket) else (claim.names, False)
    with _argon2_turns.turn(clients, urgent=urgent, timeout=ARGON2_PATIENCE):
        return hash_secret_raw(secret, salt, p.time_cost, p.memory_cost, p.parallelism, KEY_BYTES, Type.ID)
