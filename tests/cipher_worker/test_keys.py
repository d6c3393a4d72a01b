"""Album keys: sealing to a public key, password slots and key files."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cipher_worker.errors import BadInput, PassphraseRequired, WrongKey
from cipher_worker.keys import (
    DEFAULT_KDF,
    KdfParams,
    KeySlot,
    generate_album_keypair,
    key_fingerprint,
    open_album_key,
    open_content_key,
    open_sealed,
    public_key_from_private,
    read_private_key_file,
    read_public_key_file,
    seal,
    seal_album_key,
    seal_content_key,
    unwrap_private_key,
    wrap_private_key,
    write_private_key_file,
    write_public_key_file,
)

# Argon2id at its minimum cost: the tests check behaviour, not hardness.
TINY = KdfParams(time_cost=1, memory_cost=8, parallelism=1)

relaxed = settings(deadline=None, max_examples=40)
ALBUM = generate_album_keypair()
OTHER_ALBUM = generate_album_keypair()


def test_album_key_pairs_are_fresh_x25519_pairs() -> None:
    private, public = generate_album_keypair()
    assert len(private) == 32 and len(public) == 32
    assert public_key_from_private(private) == public
    assert generate_album_keypair()[0] != private


def test_fingerprints_are_short_stable_and_distinct() -> None:
    fingerprint = key_fingerprint(ALBUM[1])
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert fingerprint == key_fingerprint(ALBUM[1])
    assert fingerprint != key_fingerprint(OTHER_ALBUM[1])


@relaxed
@given(st.binary(max_size=300), st.binary(max_size=40))
def test_sealed_data_opens_with_the_private_key(plaintext: bytes, context: bytes) -> None:
    blob = seal(plaintext, ALBUM[1], context)
    assert len(blob) == 32 + 12 + len(plaintext) + 16
    assert open_sealed(blob, ALBUM[0], context) == plaintext


def test_sealing_twice_gives_different_blobs() -> None:
    assert seal(b"same", ALBUM[1]) != seal(b"same", ALBUM[1])


def test_another_private_key_cannot_open_sealed_data() -> None:
    blob = seal(b"secret", ALBUM[1])
    with pytest.raises(WrongKey):
        open_sealed(blob, OTHER_ALBUM[0])


def test_sealed_data_opens_only_in_its_own_context() -> None:
    blob = seal(b"secret", ALBUM[1], b"upload")
    with pytest.raises(WrongKey):
        open_sealed(blob, ALBUM[0], b"content-key")
    with pytest.raises(WrongKey):
        open_content_key(blob, ALBUM[0])


@relaxed
@given(st.data())
def test_any_altered_byte_makes_sealed_data_unopenable(data: st.DataObject) -> None:
    blob = bytearray(seal(b"a content key of 32 bytes.......", ALBUM[1]))
    index = data.draw(st.integers(0, len(blob) - 1))
    blob[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(WrongKey):
        open_sealed(bytes(blob), ALBUM[0])


@pytest.mark.parametrize("blob", [b"", b"\x00" * 59, b"short"])
def test_malformed_sealed_data_is_bad_input(blob: bytes) -> None:
    with pytest.raises(BadInput, match="too short"):
        open_sealed(blob, ALBUM[0])


def test_keys_of_the_wrong_size_are_bad_input() -> None:
    with pytest.raises(BadInput):
        seal(b"x", ALBUM[1][:31])
    with pytest.raises(BadInput):
        open_sealed(seal(b"x", ALBUM[1]), ALBUM[0] + b"\x00")


def test_a_degenerate_public_key_is_refused() -> None:
    with pytest.raises(BadInput, match="not a usable album public key"):
        seal(b"x", bytes(32))  # the all-zero point: every shared secret would be zero


def test_content_keys_open_only_with_their_album_key() -> None:
    content_key = os.urandom(32)
    sealed = seal_content_key(content_key, ALBUM[1])
    assert open_content_key(sealed, ALBUM[0]) == content_key
    with pytest.raises(WrongKey):
        open_content_key(sealed, OTHER_ALBUM[0])


def test_an_album_key_sealed_to_a_slot_opens_with_that_slot_key_only() -> None:
    slot_private, slot_public = generate_album_keypair()
    sealed = seal_album_key(ALBUM[0], slot_public)
    assert open_album_key(sealed, slot_private) == ALBUM[0]
    with pytest.raises(WrongKey):
        open_album_key(sealed, OTHER_ALBUM[0])
    with pytest.raises(WrongKey):  # nor does a content key's sealing open as an album key
        open_album_key(seal_content_key(ALBUM[0], slot_public), slot_private)


def test_a_key_slot_opens_with_its_password_only() -> None:
    slot = wrap_private_key(ALBUM[0], "correct horse", TINY)
    assert unwrap_private_key(slot, "correct horse") == ALBUM[0]
    with pytest.raises(WrongKey, match="wrong password"):
        unwrap_private_key(slot, "correct horsE")
    assert "wrapped" not in repr(slot) and "salt" not in repr(slot)


def test_slots_of_the_same_key_and_password_differ() -> None:
    a, b = wrap_private_key(ALBUM[0], "pw", TINY), wrap_private_key(ALBUM[0], "pw", TINY)
    assert a.salt != b.salt and a.wrapped != b.wrapped


def test_a_slot_keeps_its_own_parameters_through_bytes() -> None:
    odd = KdfParams(time_cost=2, memory_cost=16, parallelism=2)
    slot = wrap_private_key(ALBUM[0], "pw", odd)
    blob = slot.to_bytes()
    assert len(blob) == 94
    restored = KeySlot.from_bytes(blob)
    assert restored == slot and restored.params == odd
    # Unwrapping uses the stored parameters, not DEFAULT_KDF (with which this would fail).
    assert unwrap_private_key(restored, "pw") == ALBUM[0]


def test_a_slot_with_altered_parameters_does_not_open() -> None:
    blob = bytearray(wrap_private_key(ALBUM[0], "pw", TINY).to_bytes())
    blob[6] = 2  # time_cost 1 -> 2: the parameters are bound to the wrapped key
    altered = KeySlot.from_bytes(bytes(blob))
    assert altered.params.time_cost == 2
    with pytest.raises(WrongKey):
        unwrap_private_key(altered, "pw")


def test_passwords_are_compared_after_unicode_normalisation() -> None:
    slot = wrap_private_key(ALBUM[0], "caf\u00e9", TINY)
    assert unwrap_private_key(slot, "cafe\u0301") == ALBUM[0]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"XXXX" + b[4:], "not a Veil key slot"),
        (lambda b: b[:4] + b"\x09" + b[5:], "version 9"),
        (lambda b: b[:5] + b"\x07" + b[6:], "unknown key derivation"),
        (lambda b: b[:6] + (10_000).to_bytes(4, "little") + b[10:], "time cost"),
        (lambda b: b[:10] + (2**31).to_bytes(4, "little") + b[14:], "memory cost"),
        (lambda b: b[:30], "not a Veil key slot"),
    ],
)
def test_damaged_or_foreign_slots_are_bad_input(mutate: Callable[[bytes], bytes], message: str) -> None:
    blob = wrap_private_key(ALBUM[0], "pw", TINY).to_bytes()
    with pytest.raises(BadInput, match=message):
        KeySlot.from_bytes(mutate(blob))


def test_empty_passwords_and_bad_parameters_are_refused() -> None:
    with pytest.raises(BadInput):
        wrap_private_key(ALBUM[0], "", TINY)
    with pytest.raises(BadInput):
        KdfParams(time_cost=1, memory_cost=8, parallelism=2)  # Argon2 needs 8 KiB per lane


def test_default_cost_meets_the_owasp_minimum() -> None:
    assert DEFAULT_KDF.memory_cost >= 19 * 1024 and DEFAULT_KDF.time_cost >= 2


def test_private_key_file_without_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "album.key"
    write_private_key_file(path, ALBUM[0], None)
    text = path.read_text()
    assert text.startswith("-----BEGIN VEIL ALBUM PRIVATE KEY-----\n")
    assert text.rstrip().endswith("-----END VEIL ALBUM PRIVATE KEY-----")
    assert read_private_key_file(path, None) == ALBUM[0]
    assert read_private_key_file(path, "ignored") == ALBUM[0]


def test_private_key_file_with_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "album.key"
    write_private_key_file(path, ALBUM[0], "open sesame", TINY)
    assert path.read_text().startswith("-----BEGIN VEIL ENCRYPTED ALBUM PRIVATE KEY-----\n")
    assert read_private_key_file(path, "open sesame") == ALBUM[0]
    with pytest.raises(PassphraseRequired, match="protected by a passphrase"):
        read_private_key_file(path, None)
    with pytest.raises(WrongKey, match="wrong passphrase") as excinfo:
        read_private_key_file(path, "open sesam")
    assert not isinstance(excinfo.value, PassphraseRequired)


def test_private_key_files_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "album.key"
    path.write_text("old contents")
    path.chmod(0o644)
    write_private_key_file(path, ALBUM[0], None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_private_key_file(path, None) == ALBUM[0]
    fresh = tmp_path / "fresh.key"
    write_private_key_file(fresh, ALBUM[0], "pw", TINY)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


def test_public_key_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "album.pub"
    write_public_key_file(path, ALBUM[1])
    assert path.read_text().startswith("-----BEGIN VEIL ALBUM PUBLIC KEY-----\n")
    assert read_public_key_file(path) == ALBUM[1]


def test_public_and_private_key_files_are_not_interchangeable(tmp_path: Path) -> None:
    public, private = tmp_path / "album.pub", tmp_path / "album.key"
    write_public_key_file(public, ALBUM[1])
    write_private_key_file(private, ALBUM[0], None)
    with pytest.raises(BadInput, match="holds an album public key"):
        read_private_key_file(public, None)
    with pytest.raises(BadInput, match="holds an album private key"):
        read_public_key_file(private)


@pytest.mark.parametrize(
    "contents",
    [
        b"",
        b"just some notes\n",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
        b"x" * 100_000,
    ],
    ids=["empty", "text", "png", "ssh-key", "huge"],
)
def test_files_that_are_not_veil_keys_are_bad_input(tmp_path: Path, contents: bytes) -> None:
    path = tmp_path / "not-a-key"
    path.write_bytes(contents)
    with pytest.raises(BadInput, match="not a Veil key file"):
        read_private_key_file(path, None)
    with pytest.raises(BadInput, match="not a Veil key file"):
        read_public_key_file(path)


def test_damaged_key_files_are_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "album.pub"
    write_public_key_file(path, ALBUM[1])
    good = path.read_text()
    path.write_text(good.replace("-----END VEIL ALBUM PUBLIC KEY-----", ""))
    with pytest.raises(BadInput, match="damaged"):
        read_public_key_file(path)
    path.write_text(good.replace(good.splitlines()[1], "!!!!"))
    with pytest.raises(BadInput, match="damaged"):
        read_public_key_file(path)
    path.write_text(good.replace(good.splitlines()[1], "AAAA"))
    with pytest.raises(BadInput, match="not 32 bytes"):
        read_public_key_file(path)
    with pytest.raises(BadInput, match="no key file"):
        read_public_key_file(tmp_path / "missing.pub")


@pytest.mark.parametrize("turns", [2, 8])
def test_at_most_so_many_argon2_runs_hold_their_memory_at_once(monkeypatch: pytest.MonkeyPatch, turns: int) -> None:
    """Review round 7: thirty album creations at once took a web process from 0.2 to 1.4 GB."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from cipher_worker import keys
    from cipher_worker.turns import FairTurns

    running, most, lock = 0, 0, threading.Lock()
    real = keys.hash_secret_raw

    def watched(*args: object) -> bytes:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)  # long enough for every thread to try to start its own
        try:
            return real(*args)  # type: ignore[arg-type]
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(keys, "hash_secret_raw", watched)
    monkeypatch.setattr(keys, "_argon2_turns", FairTurns(turns, max_waiting=8))  # all anonymous
    private, _ = ALBUM
    with ThreadPoolExecutor(8) as pool:
        slots = list(pool.map(lambda i: wrap_private_key(private, f"password {i}", TINY), range(8)))
    assert [unwrap_private_key(s, f"password {i}") for i, s in enumerate(slots)] == [private] * 8
    assert most <= turns and (turns == 2 or most > 2)  # with room for eight, they do all start at once


def test_a_turn_waited_for_in_the_event_loop_serves_the_hash_in_a_thread_and_goes_back_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    from cipher_worker import keys
    from cipher_worker.turns import FairTurns

    turns = FairTurns(1)
    monkeypatch.setattr(keys, "_argon2_turns", turns)
    private, _ = ALBUM
    slot = wrap_private_key(private, "the family password", TINY)
    seen: list[int] = []

    def unwrap_then_more_work() -> bytes:
        with keys.hashing_for("address:elsewhere", urgent=True):  # inside a waited-for turn: changes nothing
            opened = unwrap_private_key(slot, "the family password")
        seen.append(turns._free)  # the turn is back as soon as the hash is done
        return opened

    async def scenario() -> bytes:
        async with keys.turn_before_hashing("address:home", urgent=True):
            assert turns._free == 0
            return await asyncio.to_thread(unwrap_then_more_work)

    assert asyncio.run(scenario()) == private
    assert seen == [1] and turns._free == 1 and not turns._holding
