"""The latent cipher: exact recovery, group properties, uniformity and independent face keys."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats
from scipy.special import ndtr

from cipher_worker.cipher import (
    FacePad,
    combine,
    decoy_content_key,
    decrypt,
    derive_face_keys,
    encrypt,
    from_torus,
    random_content_key,
    random_nonce,
    to_torus,
)
from cipher_worker.errors import BadInput

# Overflow warnings would mean the mod-2^32 arithmetic is not the plain wraparound it should be.
pytestmark = pytest.mark.filterwarnings("error")

DIM = 84
U32_MAX = 2**32 - 1
EXTREMES = np.array([0, 1, 2, 2**31 - 2, 2**31 - 1, 2**31, 2**31 + 1, U32_MAX - 1, U32_MAX], dtype=np.uint32)

relaxed = settings(deadline=None, max_examples=60)
identities = hnp.arrays(np.uint32, DIM)
pads = hnp.arrays(np.uint32, DIM).map(FacePad)
keys32 = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=16, max_size=16)


def keys_for(seed: int, index: int = 0, dim: int = DIM) -> FacePad:
    return derive_face_keys(seed.to_bytes(32, "little"), bytes(16), index, dim).pad


@relaxed
@given(identities, pads)
def test_decrypt_recovers_the_identity_exactly(u: np.ndarray, pad: FacePad) -> None:
    u_enc = encrypt(u, pad)
    assert u_enc.dtype == np.uint32
    np.testing.assert_array_equal(decrypt(u_enc, pad), u)


@relaxed
@given(identities, pads, pads)
def test_sequential_anonymization_decrypts_in_any_order(u: np.ndarray, p1: FacePad, p2: FacePad) -> None:
    twice = encrypt(encrypt(u, p1), p2)
    np.testing.assert_array_equal(twice, encrypt(encrypt(u, p2), p1))
    np.testing.assert_array_equal(decrypt(decrypt(twice, p1), p2), u)
    np.testing.assert_array_equal(decrypt(decrypt(twice, p2), p1), u)


@relaxed
@given(identities, pads, pads, pads)
def test_combined_pad_undoes_several_encryptions_in_one_step(
    u: np.ndarray, p1: FacePad, p2: FacePad, p3: FacePad
) -> None:
    thrice = encrypt(encrypt(encrypt(u, p1), p2), p3)
    np.testing.assert_array_equal(decrypt(thrice, combine(p1, p2, p3)), u)
    np.testing.assert_array_equal(encrypt(u, combine(p1, p2, p3)), thrice)
    assert combine(p1, p2) == p1 + p2 == p2 + p1


@relaxed
@given(identities, pads)
def test_negated_pad_is_the_decryption_key(u: np.ndarray, pad: FacePad) -> None:
    np.testing.assert_array_equal(encrypt(u, -pad), decrypt(u, pad))
    np.testing.assert_array_equal(decrypt(encrypt(u, pad), pad), encrypt(encrypt(u, pad), -pad))
    assert pad + (-pad) == FacePad(np.zeros(DIM, dtype=np.uint32))
    negated = -pad
    assert -negated == pad
    assert pad - pad == FacePad(np.zeros(DIM, dtype=np.uint32))


def test_arithmetic_wraps_around_at_the_extremes() -> None:
    pad = FacePad(np.full(EXTREMES.size, U32_MAX, dtype=np.uint32))
    np.testing.assert_array_equal(encrypt(EXTREMES, pad), EXTREMES - np.uint32(1))
    np.testing.assert_array_equal(decrypt(encrypt(EXTREMES, pad), pad), EXTREMES)
    np.testing.assert_array_equal((-pad).values, np.ones(EXTREMES.size, dtype=np.uint32))


@relaxed
@given(hnp.arrays(np.uint32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=8)))
def test_torus_round_trip_is_exact(u: np.ndarray) -> None:
    x = from_torus(u)
    assert x.dtype == np.float64 and x.shape == u.shape and np.isfinite(x).all()
    np.testing.assert_array_equal(to_torus(x), u)


def test_torus_round_trip_is_exact_at_the_ends_and_the_middle() -> None:
    ends = np.concatenate(
        [
            np.arange(0, 2**16),
            np.arange(2**31 - 2**15, 2**31 + 2**15),
            np.arange(2**32 - 2**16, 2**32),
        ]
    ).astype(np.uint32)
    np.testing.assert_array_equal(to_torus(from_torus(ends)), ends)
    np.testing.assert_array_equal(to_torus(from_torus(EXTREMES)), EXTREMES)


def test_torus_is_symmetric_and_ordered() -> None:
    u = np.arange(0, 2**32, 2**32 // 4099, dtype=np.uint64).astype(np.uint32)
    x = from_torus(u)
    assert (np.diff(x) > 0).all()
    np.testing.assert_array_equal(from_torus(U32_MAX - u), -x)


@relaxed
@given(hnp.arrays(np.float64, 32, elements=st.floats(-8, 8)))
def test_to_torus_is_floor_of_phi_times_2_to_the_32(x: np.ndarray) -> None:
    naive = np.floor(ndtr(x) * 2.0**32)
    # The naive float64 formula may be off by one in the upper tail; to_torus is the exact one.
    assert np.abs(to_torus(x).astype(np.float64) - np.minimum(naive, U32_MAX)).max() <= 1


def test_to_torus_clips_huge_latents_and_refuses_nan() -> None:
    x = np.array([-np.inf, -1e300, -50.0, 50.0, 1e300, np.inf, 0.0, -0.0])
    expected = [0, 0, 0, U32_MAX, U32_MAX, U32_MAX, 2**31, 2**31]
    np.testing.assert_array_equal(to_torus(x), np.array(expected, dtype=np.uint32))
    with pytest.raises(BadInput):
        to_torus(np.array([0.1, np.nan]))


def test_torus_keeps_shapes_and_accepts_float32() -> None:
    x = np.random.default_rng(1).standard_normal((3, 4, 5)).astype(np.float32)
    u = to_torus(x)
    assert u.shape == (3, 4, 5) and u.dtype == np.uint32
    np.testing.assert_allclose(from_torus(u), x, atol=1e-6)


@relaxed
@given(keys32, nonces, st.integers(0, 10_000), st.integers(0, 10_000))
def test_different_faces_of_a_photo_get_independent_keys(ck: bytes, nonce: bytes, i: int, j: int) -> None:
    a, b = derive_face_keys(ck, nonce, i, DIM), derive_face_keys(ck, nonce, j, DIM)
    assert (a.pad == b.pad) == (i == j)
    assert (a.region_key == b.region_key) == (i == j)


@relaxed
@given(keys32, nonces, nonces)
def test_different_photos_get_different_keys(ck: bytes, n1: bytes, n2: bytes) -> None:
    same = n1 == n2
    assert (derive_face_keys(ck, n1, 0, DIM).pad == derive_face_keys(ck, n2, 0, DIM).pad) == same
    other_ck = bytes(b ^ 1 for b in ck)
    assert derive_face_keys(ck, n1, 0, DIM).pad != derive_face_keys(other_ck, n1, 0, DIM).pad


def test_face_keys_are_deterministic_and_shaped() -> None:
    ck, nonce = random_content_key(), random_nonce()
    keys = derive_face_keys(ck, nonce, 3, DIM)
    assert keys == derive_face_keys(ck, nonce, 3, DIM)
    assert keys.pad.values.shape == (DIM,) and keys.pad.values.dtype == np.uint32
    assert len(keys.region_key) == 32
    assert "region_key=<hidden>" in repr(keys)
    # A shorter pad is a prefix of the longer one: the dimension is not a second key.
    np.testing.assert_array_equal(derive_face_keys(ck, nonce, 3, 10).pad.values, keys.pad.values[:10])


@pytest.mark.parametrize(
    ("ck", "nonce", "index", "dim"),
    [
        (bytes(31), bytes(16), 0, 8),
        (bytes(32), bytes(15), 0, 8),
        (bytes(32), bytes(16), -1, 8),
        (bytes(32), bytes(16), 0, 0),
    ],
)
def test_face_keys_refuse_bad_arguments(ck: bytes, nonce: bytes, index: int, dim: int) -> None:
    with pytest.raises(BadInput):
        derive_face_keys(ck, nonce, index, dim)


@pytest.mark.parametrize(
    "u",
    [np.zeros(DIM, np.uint32), np.full(DIM, U32_MAX, np.uint32), to_torus(np.linspace(-3, 3, DIM))],
    ids=["zeros", "max", "typical"],
)
def test_uniform_pads_make_the_stored_identity_uniform_whatever_the_face(u: np.ndarray) -> None:
    # 1500 photos of the same face: the stored u' must look like fresh uniform noise.
    u_enc = np.concatenate([encrypt(u, keys_for(seed)) for seed in range(1500)])
    for bins in (u_enc >> np.uint32(28), u_enc & np.uint32(15)):  # high and low 4 bits
        counts = np.bincount(bins.astype(np.int64), minlength=16)
        assert stats.chisquare(counts).pvalue > 1e-4
    # ... so the anonymized latent is a sample of the generator's N(0, I) prior.
    assert stats.kstest(from_torus(u_enc), "norm").pvalue > 1e-4


@relaxed
@given(identities, st.integers(0, 2**20), st.integers(0, 2**20))
def test_a_wrong_key_gives_another_identity(u: np.ndarray, right: int, wrong: int) -> None:
    if right == wrong:
        wrong += 1
    u_enc = encrypt(u, keys_for(right))
    u_wrong = decrypt(u_enc, keys_for(wrong))
    assert not np.array_equal(u_wrong, u)
    assert not np.array_equal(u_wrong, u_enc)
    assert np.isfinite(from_torus(u_wrong)).all()


def test_encrypt_handles_batches_of_faces() -> None:
    pad = keys_for(7)
    u = np.random.default_rng(0).integers(0, 2**32, (5, DIM), dtype=np.uint64).astype(np.uint32)
    batch = encrypt(u, pad)
    np.testing.assert_array_equal(batch[2], encrypt(u[2], pad))
    np.testing.assert_array_equal(decrypt(batch, pad), u)


def test_encrypt_refuses_wrong_shapes_and_types() -> None:
    pad = keys_for(1)
    with pytest.raises(BadInput, match="dimensions"):
        encrypt(np.zeros(DIM - 1, np.uint32), pad)
    with pytest.raises(BadInput):
        encrypt(np.zeros(DIM, np.float32), pad)
    with pytest.raises(BadInput):
        encrypt(np.full(DIM, -1, np.int64), pad)
    with pytest.raises(BadInput):
        combine()
    with pytest.raises(BadInput):
        combine(pad, keys_for(1, dim=8))


def test_face_pads_are_immutable_values() -> None:
    raw = np.arange(DIM, dtype=np.uint32)
    pad = FacePad(raw)
    raw[0] = 99  # the caller's array is copied, not shared
    assert pad == FacePad(np.arange(DIM, dtype=np.uint32))
    assert hash(pad) == hash(FacePad(np.arange(DIM, dtype=np.uint32)))
    assert not pad.values.flags.writeable
    assert combine(pad) == pad
    assert repr(pad) == "FacePad(dim=84)"


def test_decoy_keys_depend_only_on_the_password_and_salt() -> None:
    salt = b"album-salt"
    key = decoy_content_key("hunter2", salt)
    assert len(key) == 32 and key == decoy_content_key("hunter2", salt)
    assert key != decoy_content_key("hunter3", salt)
    assert key != decoy_content_key("hunter2", b"other-salt")
    # The same word typed on another keyboard (NFD vs NFC) gives the same decoy faces.
    assert decoy_content_key("caf\u00e9", salt) == decoy_content_key("cafe\u0301", salt)


def test_random_keys_have_the_right_sizes_and_differ() -> None:
    assert len(random_content_key()) == 32 and len(random_nonce()) == 16
    assert random_content_key() != random_content_key()
    assert random_nonce() != random_nonce()
