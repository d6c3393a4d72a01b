"""The recovery envelope: exact round trips, tamper detection, and embedding in image files."""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from cipher_worker.carriers import embed, extract, strip
from cipher_worker.cipher import (
    decrypt,
    derive_face_keys,
    encrypt,
    random_content_key,
    random_nonce,
    to_torus,
)
from cipher_worker.envelope import (
    HEAD_BYTES,
    VERSION,
    Envelope,
    FaceRecord,
    open_face_pixels,
    seal_envelope,
    seal_face_pixels,
    sealed_content_key_of,
    verify_envelope,
)
from cipher_worker.errors import BadInput, EnvelopeError, EnvelopeTampered, NoEnvelope
from cipher_worker.keys import generate_album_keypair, open_content_key, seal_content_key

relaxed = settings(deadline=None, max_examples=40)

i32 = st.integers(-(2**31), 2**31 - 1)
_common = {
    "transform": hnp.arrays(np.float64, (2, 3)),
    "box": st.tuples(i32, i32, i32, i32),
    "attributes": hnp.arrays(np.float32, st.integers(0, 20)),
    "identity": hnp.arrays(np.uint32, st.integers(0, 100)),
    "pixels": st.none() | st.binary(max_size=200),
}
# version 1: an ellipse's parameters; version 2: a raster, the chosen candidate pad, the skin colour
v1_faces = st.builds(FaceRecord, mask=st.lists(st.floats(), max_size=5).map(tuple), **_common)
v2_faces = st.builds(
    FaceRecord,
    mask=st.integers(1, 12).flatmap(lambda n: hnp.arrays(np.uint8, (n, n))),
    candidate=st.integers(0, 2**16 - 1),
    skin=st.just(np.zeros(0, np.float32)) | hnp.arrays(np.float32, 6),
    **_common,
)
envelopes = st.one_of(
    *(
        st.builds(
            Envelope,
            version=st.just(version),
            codec_id=st.text(max_size=30),
            codec_fingerprint=st.binary(min_size=16, max_size=16),
            fidelity=st.sampled_from(["exact", "latent"]),
            sealed_content_key=st.binary(max_size=120),
            nonce=st.binary(min_size=16, max_size=16),
            image_size=st.tuples(st.integers(1, 2**32 - 1), st.integers(1, 2**32 - 1)),
            faces=st.lists(faces, max_size=3).map(tuple),
            mac=st.binary(min_size=32, max_size=32),
        )
        for version, faces in ((1, v1_faces), (2, v2_faces))
    )
)


def make_face(seed: int, with_pixels: bool = True) -> FaceRecord:
    rng = np.random.default_rng(seed)
    return FaceRecord(
        transform=rng.standard_normal((2, 3)),
        box=(10 + seed, 20, 74 + seed, 84),
        mask=np.linspace(0, 255, 64).astype(np.uint8).reshape(8, 8),
        candidate=seed,
        attributes=rng.standard_normal(12).astype(np.float32),
        identity=rng.integers(0, 2**32, 84, dtype=np.uint64).astype(np.uint32),
        pixels=rng.bytes(60) if with_pixels else None,
    )


def make_envelope(content_key: bytes, version: int = VERSION) -> Envelope:
    unsigned = Envelope(
        version=version,
        codec_id="dcgan64",
        codec_fingerprint=bytes(range(16)),
        fidelity="exact",
        sealed_content_key=seal_content_key(content_key, generate_album_keypair()[1]),
        nonce=random_nonce(),
        image_size=(640, 480),
        faces=(make_face(1), make_face(2, with_pixels=False)),
    )
    return seal_envelope(unsigned, content_key)


# --- the binary format ---------------------------------------------------------------------


@relaxed
@given(envelopes)
def test_envelope_bytes_round_trip_exactly(env: Envelope) -> None:
    blob = env.to_bytes()
    back = Envelope.from_bytes(blob)
    assert back == env
    assert back.to_bytes() == blob
    for mine, theirs in zip(back.faces, env.faces, strict=True):
        assert mine.identity.dtype == np.uint32 and mine.attributes.dtype == np.float32
        assert mine.transform.shape == (2, 3) and mine.transform.dtype == np.float64
        assert mine.transform.tobytes() == theirs.transform.tobytes()  # bit-identical, NaNs included


@relaxed
@given(envelopes)
def test_the_sealed_content_key_is_read_from_the_envelopes_head_alone(env: Envelope) -> None:
    blob = env.to_bytes()
    assert sealed_content_key_of(blob[:HEAD_BYTES]) == env.sealed_content_key == sealed_content_key_of(blob)


def test_a_head_cut_before_the_sealed_content_key_is_an_envelope_error() -> None:
    env = make_envelope(random_content_key())
    blob = env.to_bytes()
    end = blob.index(env.sealed_content_key) + len(env.sealed_content_key)
    assert end <= HEAD_BYTES and sealed_content_key_of(blob[:end]) == env.sealed_content_key
    for cut in range(end):
        with pytest.raises(EnvelopeError):
            sealed_content_key_of(blob[:cut])
    with pytest.raises(EnvelopeError, match="not Veil"):
        sealed_content_key_of(b"JFIF" + blob[4:HEAD_BYTES])


def test_every_truncation_is_an_envelope_error() -> None:
    blob = make_envelope(random_content_key()).to_bytes()
    for cut in range(len(blob)):
        with pytest.raises(EnvelopeError):
            Envelope.from_bytes(blob[:cut])


@relaxed
@given(envelopes, st.data())
def test_random_truncations_and_extra_bytes_are_envelope_errors(env: Envelope, data: st.DataObject) -> None:
    blob = env.to_bytes()
    with pytest.raises(EnvelopeError):
        Envelope.from_bytes(blob[: data.draw(st.integers(0, len(blob) - 1))])
    with pytest.raises(EnvelopeError, match="unexpected bytes"):
        Envelope.from_bytes(blob + data.draw(st.binary(min_size=1, max_size=8)))


@relaxed
@given(st.binary(max_size=400))
def test_garbage_never_crashes_the_parser(tail: bytes) -> None:
    for blob in (tail, b"VEIL\x01" + tail, b"VEIL\x02" + tail):
        try:
            env = Envelope.from_bytes(blob)
        except EnvelopeError:
            continue
        assert env.to_bytes() == blob  # anything accepted has exactly this encoding


def test_unknown_versions_are_named() -> None:
    blob = bytearray(make_envelope(random_content_key()).to_bytes())
    assert blob[4] == VERSION == 3
    blob[4] = 4
    with pytest.raises(EnvelopeError, match="version 4"):
        Envelope.from_bytes(bytes(blob))


def test_a_version_2_body_is_not_read_as_version_1() -> None:
    blob = bytearray(make_envelope(random_content_key(), version=2).to_bytes())
    blob[4] = 1
    with pytest.raises(EnvelopeError):
        Envelope.from_bytes(bytes(blob))


def test_a_version_3_body_is_not_read_as_version_2() -> None:
    blob = bytearray(make_envelope(random_content_key()).to_bytes())
    blob[4] = 2
    with pytest.raises(EnvelopeError):
        Envelope.from_bytes(bytes(blob))


def test_a_raster_mask_is_refused_in_a_version_1_envelope_and_an_ellipse_in_version_2() -> None:
    raster, ellipse = (
        make_face(1),
        dataclasses.replace(make_face(1), mask=(0.5, 8.0, 0.125), mask_blob=b"", candidate=0),
    )
    for version, face in ((1, raster), (2, ellipse)):
        env = dataclasses.replace(make_envelope(random_content_key()), version=version, faces=(face,))
        with pytest.raises(EnvelopeError, match="holds"):
            env.to_bytes()


def test_the_stored_mask_bytes_are_kept_as_read() -> None:
    """Another zlib could compress the same raster differently: the MAC covers the bytes as stored."""
    env = make_envelope(random_content_key())
    face = env.faces[0]
    assert isinstance(face.mask, np.ndarray)
    recompressed = zlib.compress(face.mask.tobytes(), 1)
    assert recompressed != face.mask_blob
    other = dataclasses.replace(face, mask_blob=recompressed)
    back = Envelope.from_bytes(dataclasses.replace(env, faces=(other,)).to_bytes()).faces[0]
    assert back.mask_blob == recompressed and np.array_equal(back.mask, face.mask)


def test_foreign_data_is_not_an_envelope() -> None:
    with pytest.raises(EnvelopeError, match="not Veil recovery data"):
        Envelope.from_bytes(b"\x89PNG\r\n\x1a\n")


def test_envelopes_refuse_impossible_fields() -> None:
    env = make_envelope(random_content_key())
    for change in (
        {"fidelity": "perfect"},
        {"nonce": b"short"},
        {"codec_fingerprint": bytes(17)},
        {"image_size": (0, 10)},
        {"version": 4},
        {"cipher_id": ""},
        {"cipher_fingerprint": bytes(15)},
        {"version": 2, "cipher_id": "ifadit"},
    ):
        with pytest.raises(EnvelopeError):
            dataclasses.replace(env, **change)
    for face_change in (
        {"mask": np.zeros((4, 5), np.uint8), "mask_blob": b""},
        {"candidate": 2**16},
        {"skin": np.zeros(5, np.float32)},
    ):
        with pytest.raises(EnvelopeError):
            dataclasses.replace(env.faces[0], **face_change)
    with pytest.raises(EnvelopeError, match="shape"):
        dataclasses.replace(env.faces[0], transform=np.zeros((3, 3)))
    with pytest.raises(EnvelopeError):
        dataclasses.replace(env.faces[0], identity=np.zeros(84, dtype=np.int64))


# --- authentication ------------------------------------------------------------------------


def test_an_unsealed_envelope_is_neither_stored_nor_trusted() -> None:
    content_key = random_content_key()
    unsigned = dataclasses.replace(make_envelope(content_key), mac=b"")
    with pytest.raises(EnvelopeError, match="must be sealed"):
        unsigned.to_bytes()
    with pytest.raises(EnvelopeTampered):
        verify_envelope(unsigned, content_key)
    sealed = seal_envelope(unsigned, content_key)
    assert len(sealed.mac) == 32 and dataclasses.replace(sealed, mac=b"") == unsigned
    verify_envelope(Envelope.from_bytes(sealed.to_bytes()), content_key)


def test_a_sealed_envelope_verifies_under_its_content_key() -> None:
    content_key = random_content_key()
    env = make_envelope(content_key)
    verify_envelope(env, content_key)
    verify_envelope(Envelope.from_bytes(env.to_bytes()), content_key)


def test_a_wrong_content_key_is_caught() -> None:
    env = make_envelope(random_content_key())
    with pytest.raises(EnvelopeTampered, match="has been altered"):
        verify_envelope(env, random_content_key())


def test_every_bit_flip_is_caught() -> None:
    content_key = random_content_key()
    blob = make_envelope(content_key).to_bytes()
    for index in range(len(blob)):
        for bit in range(8):
            flipped = bytearray(blob)
            flipped[index] ^= 1 << bit
            try:
                env = Envelope.from_bytes(bytes(flipped))
            except EnvelopeError:
                continue  # refused while parsing: caught too
            with pytest.raises(EnvelopeTampered):
                verify_envelope(env, content_key)


def test_swapping_the_sealed_content_key_is_caught() -> None:
    content_key = random_content_key()
    env = make_envelope(content_key)
    resealed = seal_content_key(content_key, generate_album_keypair()[1])
    swapped = dataclasses.replace(env, sealed_content_key=resealed)
    with pytest.raises(EnvelopeTampered):
        verify_envelope(swapped, content_key)


# --- face pixels ---------------------------------------------------------------------------


@relaxed
@given(hnp.arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.sampled_from([3, 4]))))
def test_face_pixels_round_trip(pixels: np.ndarray) -> None:
    key = os.urandom(32)
    blob = seal_face_pixels(key, pixels, b"photo/face 0")
    back = open_face_pixels(key, blob, b"photo/face 0")
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, pixels)


def test_face_pixels_compress_smooth_regions() -> None:
    smooth = np.tile(np.arange(64, dtype=np.uint8)[:, None, None], (1, 64, 3))
    assert len(seal_face_pixels(os.urandom(32), smooth, b"")) < smooth.nbytes // 4


def test_face_pixels_need_their_key_and_their_place() -> None:
    key = os.urandom(32)
    pixels = np.random.default_rng(0).integers(0, 256, (8, 6, 3), dtype=np.uint8)
    blob = seal_face_pixels(key, pixels, b"face 0")
    with pytest.raises(EnvelopeTampered):
        open_face_pixels(os.urandom(32), blob, b"face 0")
    with pytest.raises(EnvelopeTampered):
        open_face_pixels(key, blob, b"face 1")  # moved to another face
    for index in (0, 20, len(blob) - 1):
        altered = bytearray(blob)
        altered[index] ^= 0x40
        with pytest.raises(EnvelopeTampered):
            open_face_pixels(key, bytes(altered), b"face 0")
    with pytest.raises(EnvelopeTampered):
        open_face_pixels(key, blob[:10], b"face 0")


@pytest.mark.parametrize(
    "pixels",
    [
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4, 2), np.uint8),
        np.zeros((4, 4, 3), np.float32),
        np.zeros((0, 4, 3), np.uint8),
    ],
)
def test_face_pixels_refuse_other_arrays(pixels: np.ndarray) -> None:
    with pytest.raises(BadInput):
        seal_face_pixels(os.urandom(32), pixels, b"")


def test_a_key_holder_recovers_faces_from_an_embedded_envelope() -> None:
    album_private, album_public = generate_album_keypair()
    photo = np.random.default_rng(3).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    original_u = to_torus(np.random.default_rng(4).standard_normal(84))
    region = photo[8:40, 16:48]

    content_key, nonce = random_content_key(), random_nonce()
    keys = derive_face_keys(content_key, nonce, 0, 84)
    face = FaceRecord(
        transform=np.eye(2, 3),
        box=(16, 8, 48, 40),
        mask=np.full((4, 4), 255, np.uint8),
        attributes=np.zeros(12, np.float32),
        identity=encrypt(original_u, keys.pad),
        pixels=seal_face_pixels(keys.region_key, region, nonce + b"/0"),
    )
    unsigned = Envelope(
        codec_id="dcgan64",
        codec_fingerprint=bytes(16),
        fidelity="exact",
        sealed_content_key=seal_content_key(content_key, album_public),
        nonce=nonce,
        image_size=(64, 48),
        faces=(face,),
    )
    image = embed(encode(photo, "PNG"), seal_envelope(unsigned, content_key).to_bytes())

    env = Envelope.from_bytes(extract(image))
    recovered_key = open_content_key(env.sealed_content_key, album_private)
    verify_envelope(env, recovered_key)
    face_keys = derive_face_keys(recovered_key, env.nonce, 0, 84)
    np.testing.assert_array_equal(decrypt(env.faces[0].identity, face_keys.pad), original_u)
    pixels = env.faces[0].pixels
    assert pixels is not None
    np.testing.assert_array_equal(open_face_pixels(face_keys.region_key, pixels, env.nonce + b"/0"), region)


# --- embedding in image files --------------------------------------------------------------


def encode(pixels: np.ndarray, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, **options)
    return out.getvalue()


def decode(data: bytes) -> tuple[str, tuple[int, int], np.ndarray]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.mode, image.size, np.asarray(image)


def photo(channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(5)
    ramp = np.linspace(0, 255, 60)[None, :, None]
    gradient = ramp + rng.normal(0, 20, (44, 60, channels))
    return np.clip(gradient, 0, 255).astype(np.uint8)


def exif_bytes() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = "a family photo"
    return exif.tobytes()


IMAGES = {
    "png": lambda: encode(photo(), "PNG"),
    "png-rgba": lambda: encode(photo(4), "PNG"),
    "jpeg": lambda: encode(photo(), "JPEG", quality=90),
    "jpeg-exif": lambda: encode(photo(), "JPEG", quality=90, exif=exif_bytes()),
    "webp-lossy": lambda: encode(photo(), "WEBP", quality=80),
    "webp-lossless": lambda: encode(photo(), "WEBP", lossless=True),
    "webp-lossless-alpha": lambda: encode(photo(4), "WEBP", lossless=True),
    "webp-lossy-alpha": lambda: encode(photo(4), "WEBP", quality=80),
    "webp-exif": lambda: encode(photo(), "WEBP", quality=80, exif=exif_bytes()),
}
formats = pytest.mark.parametrize("kind", list(IMAGES))


def test_the_webp_fixtures_cover_simple_and_extended_files() -> None:
    assert IMAGES["webp-lossy"]()[12:16] == b"VP8 "
    assert IMAGES["webp-lossless"]()[12:16] == b"VP8L"
    assert IMAGES["webp-lossless-alpha"]()[12:16] == b"VP8L"
    assert IMAGES["webp-exif"]()[12:16] == b"VP8X"


@formats
@pytest.mark.parametrize("size", [1, 1000, 1001])
def test_embedding_keeps_the_picture_and_extract_returns_the_envelope(kind: str, size: int) -> None:
    image = IMAGES[kind]()
    payload = os.urandom(size)
    embedded = embed(image, payload)
    assert decode(embedded)[:2] == decode(image)[:2]
    np.testing.assert_array_equal(decode(embedded)[2], decode(image)[2])
    with Image.open(io.BytesIO(embedded)) as check:
        check.verify()  # checks PNG chunk CRCs among others
    assert extract(embedded) == payload


@formats
def test_embedding_twice_replaces_the_envelope(kind: str) -> None:
    image = IMAGES[kind]()
    once = embed(image, b"first envelope")
    twice = embed(once, b"second, longer envelope")
    assert extract(twice) == b"second, longer envelope"
    assert strip(twice) == strip(once)
    assert embed(twice, b"first envelope") == once


@formats
def test_strip_removes_the_envelope_and_nothing_else(kind: str) -> None:
    image = IMAGES[kind]()
    stripped = strip(embed(image, os.urandom(333)))
    with pytest.raises(NoEnvelope, match="carries no Veil recovery data"):
        extract(stripped)
    np.testing.assert_array_equal(decode(stripped)[2], decode(image)[2])
    if not kind.startswith("webp"):
        assert stripped == image
    assert strip(image) == image


@formats
def test_an_image_without_envelope_has_none(kind: str) -> None:
    with pytest.raises(NoEnvelope):
        extract(IMAGES[kind]())


def test_large_envelopes_span_several_jpeg_segments() -> None:
    image = IMAGES["jpeg-exif"]()
    payload = os.urandom(250_000)
    embedded = embed(image, payload)
    assert embedded.count(b"VEIL\x00") == 4
    assert extract(embedded) == payload
    np.testing.assert_array_equal(decode(embedded)[2], decode(image)[2])
    with Image.open(io.BytesIO(embedded)) as reread:
        assert reread.getexif()[0x010E] == "a family photo"  # Exif still found where readers look
    assert strip(embedded) == image


def _app11_segments(data: bytes) -> list[tuple[int, int]]:
    spans, pos = [], data.find(b"\xff\xeb")
    while pos != -1 and data[pos + 4 : pos + 9] == b"VEIL\x00":
        end = pos + 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        spans.append((pos, end))
        pos = end if data[end : end + 2] == b"\xff\xeb" else -1
    return spans


def test_missing_or_reordered_jpeg_segments_are_envelope_errors() -> None:
    embedded = embed(IMAGES["jpeg"](), os.urandom(200_000))
    spans = _app11_segments(embedded)
    assert len(spans) == 4
    (a0, a1), (b0, b1) = spans[0], spans[1]
    missing = embedded[:b0] + embedded[b1:]
    with pytest.raises(EnvelopeError, match="missing or out of order"):
        extract(missing)
    swapped = embedded[:a0] + embedded[b0:b1] + embedded[a0:a1] + embedded[b1:]
    with pytest.raises(EnvelopeError, match="missing or out of order"):
        extract(swapped)


@pytest.mark.parametrize("kind", ["webp-lossy", "webp-lossless", "webp-lossless-alpha"])
def test_simple_webp_files_become_extended_with_the_right_canvas(kind: str) -> None:
    image = IMAGES[kind]()
    embedded = embed(image, b"odd")
    assert embedded[12:16] == b"VP8X" and embedded[16:20] == (10).to_bytes(4, "little")
    flags = embedded[20]
    width = int.from_bytes(embedded[24:27], "little") + 1
    height = int.from_bytes(embedded[27:30], "little") + 1
    assert (width, height) == (60, 44)
    assert bool(flags & 0x10) == kind.endswith("alpha")
    assert int.from_bytes(embedded[4:8], "little") == len(embedded) - 8
    assert len(embedded) % 2 == 0  # the odd-sized chunk is padded
    assert decode(embedded)[0] == decode(image)[0]


def test_png_envelope_with_a_bad_checksum_is_an_envelope_error() -> None:
    embedded = bytearray(embed(IMAGES["png"](), b"payload"))
    embedded[embedded.find(b"veIL") + 4] ^= 1
    with pytest.raises(EnvelopeError, match="checksum"):
        extract(bytes(embedded))


def test_unsupported_formats_are_named() -> None:
    gif = encode(photo()[:, :, 0], "GIF")
    for call in (lambda: embed(gif, b"x"), lambda: extract(gif), lambda: strip(gif)):
        with pytest.raises(BadInput, match="GIF images cannot carry"):
            call()
    with pytest.raises(BadInput, match="not a JPEG, PNG or WebP image"):
        embed(b"hello world", b"x")


@pytest.mark.parametrize("kind", ["png", "jpeg", "webp-lossy"])
def test_truncated_images_are_bad_input(kind: str) -> None:
    image = IMAGES[kind]()
    with pytest.raises(BadInput, match="truncated"):
        embed(image[: len(image) // 8], b"x")
