"""FIT's pixel-space cipher: its N-bit password and inverse password, the transformer on the
codec's crops, envelopes holding the anonymized crop (and old envelopes still reading), the
pipeline's anonymize → recover path with ``cipher="fit"``, wrong passwords giving other
faces, and refusals of other weights."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from PIL import Image

from cipher_worker import envelope, keys
from cipher_worker.align import Alignment, crop
from cipher_worker.ciphers import load_cipher, weights_path
from cipher_worker.ciphers.base import state_fingerprint
from cipher_worker.ciphers.fit import ROUND_TRIP_TOLERANCE, FITCipher
from cipher_worker.ciphers.fit_net import FaceIdentityTransformer, TransformerSpec, inverse_password
from cipher_worker.errors import BadInput, CipherMismatch
from cipher_worker.imageio import decode_image
from cipher_worker.pipeline import Pipeline
from tests.cipher_worker.test_paper_ciphers import _opened, secrets
from tests.helpers import DATA, decode


def random_fit(seed: int = 0, bits: int = 16) -> FITCipher:
    """A FIT cipher with random weights that change every crop (untrained, it is the identity map)."""
    net = FaceIdentityTransformer(TransformerSpec(bits=bits))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return FITCipher(net)


def as_int(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.int64) << np.arange(bits.shape[1])).sum(1)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


# --- passwords and the transformer -----------------------------------------------------------


@pytest.mark.parametrize("bits", [16, 8, 24])
def test_the_recovery_password_is_the_inverse_not_the_encryption_password(bits):
    fit = random_fit(bits=bits)
    e, d = fit.passwords(secrets(200)), fit.passwords(secrets(200), role="decrypt")
    assert e.shape == d.shape == (200, bits) and set(np.unique(e)) <= {0.0, 1.0}
    p, q = as_int(e), as_int(d)
    assert np.array_equal((p + q) % (1 << bits), np.zeros(200))  # −p mod 2^N
    assert (p != q).all() and (p % 2 == 1).all()  # odd: never its own inverse
    assert np.array_equal(inverse_password(torch.from_numpy(e)).numpy(), d)  # what training uses
    assert len(np.unique(p)) > min(150, 2 ** (bits - 2))  # per face, from the secret
    assert not np.array_equal(fit.passwords(secrets(5, candidate=1)), e[:5])
    assert fit.algebra == "none" and fit.space == "pixels" and fit.stored_dtype == "|u1"


def test_the_transformer_changes_crops_per_password_and_refuses_latents():
    fit = random_fit()
    crops = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    out = fit.encrypt_crop_faces(crops, secrets(3))
    assert out.dtype == np.uint8 and out.shape == crops.shape
    assert mean_abs(out, crops) > 1
    assert mean_abs(fit.encrypt_crop_faces(crops, secrets(3, candidate=1)), out) > 0.5  # another password
    assert np.array_equal(fit.encrypt_crop_faces(crops, secrets(3)), out)  # deterministic
    with pytest.raises(BadInput, match="uint8 crops"):
        fit.encrypt_crops(crops[:, :32], fit.passwords(secrets(3)))
    with pytest.raises(BadInput, match="not identity coordinates"):
        fit.encrypt_faces(np.zeros((1, fit.dim)), secrets(1))
    untrained = FITCipher(FaceIdentityTransformer(TransformerSpec()))
    assert mean_abs(untrained.encrypt_crop_faces(crops, secrets(3)), crops) < 8  # starts near the identity map


def test_the_committed_weights_are_small_and_named_by_their_fingerprint(pipeline):
    path = weights_path("fit", "dcgan64")
    assert path.stat().st_size <= 5_000_000
    fit = load_cipher("fit", pipeline.codec)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert fit.fingerprint == state_fingerprint(checkpoint["state"]) and len(fit.fingerprint) == 16
    assert (fit.id, fit.dim) == ("fit", 3 * pipeline.codec.crop_size**2)
    assert checkpoint["metrics"]["seconds"] > 0 and "round_trip_mean_abs" in checkpoint["metrics"]


# --- envelopes -----------------------------------------------------------------------------


def test_an_envelope_holding_a_stored_crop_reads_back_and_old_ones_still_read():
    stored = np.random.default_rng(1).integers(0, 256, 64 * 64 * 3, dtype=np.uint8)
    record = envelope.FaceRecord(
        transform=np.eye(2, 3),
        box=(0, 0, 10, 10),
        mask=np.full((8, 8), 255, np.uint8),
        attributes=np.zeros(0, np.float32),
        identity=stored,
    )
    env = envelope.Envelope(
        version=envelope.VERSION, codec_id="dcgan64", codec_fingerprint=bytes(16), cipher_id="fit",
        cipher_fingerprint=b"\1" * 16, fidelity="latent", sealed_content_key=b"k" * 80, nonce=bytes(16),
        image_size=(10, 10), faces=(record,), mac=b"",
    )  # fmt: skip
    data = envelope.seal_envelope(env, b"c" * 32).to_bytes()
    back = envelope.Envelope.from_bytes(data).faces[0].identity
    assert back.dtype == np.uint8 and np.array_equal(back, stored)
    assert envelope.Envelope.from_bytes(data).to_bytes() == data  # one encoding
    for old in ("envelope_v1", "envelope_v2"):  # the committed older envelopes
        for path in sorted((DATA / old).glob("*.envelope")):
            assert envelope.Envelope.from_bytes(path.read_bytes()).faces


# --- real photos through the pipeline ------------------------------------------------------


@pytest.fixture(scope="module")
def photo() -> bytes:
    out = io.BytesIO()
    Image.open(DATA / "person_b_1.jpg").convert("RGB").save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def fit_pipeline(pipeline) -> Pipeline:
    return Pipeline(pipeline.codec, pipeline.detector, cipher=load_cipher("fit", pipeline.codec))


@pytest.mark.slow
def test_a_real_photo_round_trips_within_the_documented_tolerance(pipeline, fit_pipeline, photo, album_keys):
    """Exact fidelity: the original pixels, bit for bit. Latent fidelity: the stored anonymized
    crop, decrypted with the inverse password, is the original aligned crop within the
    documented tolerance, and the recovered photo is close to the original in the face box."""
    private, public = album_keys
    original = decode_image(photo).pixels
    exact = fit_pipeline.anonymize(photo, public, fidelity="exact", fmt="PNG")
    assert envelope.Envelope.from_bytes(exact.envelope).cipher_id == "fit"
    assert np.array_equal(fit_pipeline.recover(exact.image, exact.envelope, album_private=private).pixels, original)

    latent = fit_pipeline.anonymize(photo, public, fidelity="latent", fmt="PNG")
    env = envelope.Envelope.from_bytes(latent.envelope)
    assert env.cipher_id == "fit" and env.cipher_fingerprint == fit_pipeline.cipher.fingerprint
    size = fit_pipeline.codec.crop_size
    stored = np.stack([r.identity for r in env.faces]).reshape(-1, size, size, 3)
    crops = np.stack([crop(original, Alignment(r.transform, size)) for r in env.faces])
    recovered = fit_pipeline.cipher.decrypt_crop_faces(stored, _opened(env, private))
    for back, real in zip(recovered, crops, strict=True):
        assert mean_abs(back, real) <= ROUND_TRIP_TOLERANCE
    shown = decode(latent.image)
    assert not np.array_equal(shown, original)
    photo_back = fit_pipeline.recover(latent.image, latent.envelope, album_private=private).pixels
    box = env.faces[0].box
    region = np.s_[box[1] : box[3], box[0] : box[2]]
    # in the photo the face comes back at the crop's 64 px: near the original, not equal to it, and
    # far nearer to it than the stranger shown
    assert not np.array_equal(photo_back[region], shown[region])
    assert mean_abs(photo_back[region], original[region]) < 20
    assert 2 * mean_abs(photo_back[region], original[region]) < mean_abs(shown[region], original[region])
    # any pipeline recovers it: the envelope names the cipher
    assert np.array_equal(pipeline.recover(latent.image, latent.envelope, album_private=private).pixels, photo_back)


@pytest.mark.slow
def test_the_stranger_is_another_face(fit_pipeline, photo, album_keys):
    """A stranger differs from the original crop as another person's face would (a generated
    stranger of the torus cipher differs by about 20/255 a pixel), far more than the recovery."""
    _, public = album_keys
    result = fit_pipeline.anonymize(photo, public, fidelity="latent", fmt="PNG")
    env = envelope.Envelope.from_bytes(result.envelope)
    size = fit_pipeline.codec.crop_size
    stored = np.stack([r.identity for r in env.faces]).reshape(-1, size, size, 3)
    crops = np.stack([crop(decode_image(photo).pixels, Alignment(r.transform, size)) for r in env.faces])
    for anonymized, real in zip(stored, crops, strict=True):
        assert mean_abs(anonymized, real) > 15 > 3 * ROUND_TRIP_TOLERANCE / 2


@pytest.mark.slow
def test_wrong_passwords_give_other_faces(fit_pipeline, photo, album_keys):
    private, public = album_keys
    result = fit_pipeline.anonymize(photo, public, fidelity="latent", fmt="PNG")
    env = envelope.Envelope.from_bytes(result.envelope)
    size = fit_pipeline.codec.crop_size
    stored = np.stack([r.identity for r in env.faces]).reshape(-1, size, size, 3)
    right = fit_pipeline.cipher.decrypt_crop_faces(stored, _opened(env, private))
    wrong = [
        fit_pipeline.cipher.decrypt_crop_faces(stored, secrets(len(stored), content_key=k * 32)) for k in (b"a", b"b")
    ]
    for w in wrong:
        assert mean_abs(w, right) > 3 and mean_abs(w, stored) > 1
    assert mean_abs(wrong[0], wrong[1]) > 1
    # the decoy path of recovery: a wrong password shows other faces, not the original nor the stranger
    decoy = fit_pipeline.recover(result.image, result.envelope, decoy_password="guess").pixels
    back = fit_pipeline.recover(result.image, result.envelope, album_private=private).pixels
    box = env.faces[0].box
    region = np.s_[box[1] : box[3], box[0] : box[2]]
    assert mean_abs(decoy[region], back[region]) > 1 and not np.array_equal(decoy[region], decode(result.image)[region])


@pytest.mark.slow
def test_other_weights_or_another_ciphers_label_are_refused(pipeline, fit_pipeline, photo, album_keys):
    private, public = album_keys
    result = fit_pipeline.anonymize(photo, public, fidelity="latent", fmt="PNG")
    retrained = Pipeline(pipeline.codec, pipeline.detector, cipher=random_fit())
    with pytest.raises(CipherMismatch, match="other fit cipher weights"):
        retrained.recover(result.image, result.envelope, album_private=private)
    env = envelope.Envelope.from_bytes(result.envelope)
    ck = keys.open_content_key(env.sealed_content_key, private)
    forged = envelope.seal_envelope(dataclasses.replace(env, cipher_id="riddle"), ck).to_bytes()
    with pytest.raises(CipherMismatch):
        pipeline.recover(result.image, forged, album_private=private)
