"""The cipher interface: the torus cipher behind it unchanged to the bit, iFADIT's flow exactly
invertible on any dimension, real photos through both, envelopes that name their cipher, and
refusals of the wrong one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from cipher_worker import cipher, envelope, keys
from cipher_worker.align import Alignment, crop
from cipher_worker.ciphers import CIPHERS, FaceSecret, TorusCipher, load_cipher, weights_path
from cipher_worker.ciphers.base import NO_WEIGHTS, state_fingerprint
from cipher_worker.ciphers.ifadit import ROUND_TRIP_TOLERANCE, IFADITCipher
from cipher_worker.ciphers.ifadit_net import FlowSpec, SecureIdentityFlow
from cipher_worker.cli import main
from cipher_worker.codecs.base import Latents
from cipher_worker.errors import BadInput, CipherMismatch, EnvelopeError
from cipher_worker.imageio import decode_image
from cipher_worker.pipeline import Pipeline
from tests.helpers import DATA, decode

OLD = DATA / "envelope_v2"


def random_flow_cipher(dim: int, seed: int = 0) -> IFADITCipher:
    """An iFADIT cipher with random weights that move every coordinate (an untrained flow is
    the identity map)."""
    flow = SecureIdentityFlow(FlowSpec(dim=dim, seed=seed))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return IFADITCipher(flow)


def secrets(n: int, candidate: int = 0, content_key: bytes = bytes(range(32))) -> list[FaceSecret]:
    return [FaceSecret(content_key, bytes(16), i, candidate) for i in range(n)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(float) - b.astype(float)) ** 2).mean())
    return 10 * np.log10(255**2 / max(mse, 1e-12))


# --- the interface -------------------------------------------------------------------------


def test_the_torus_cipher_behind_the_interface_gives_the_same_bits():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 88))
    ck, nonce = cipher.random_content_key(), cipher.random_nonce()
    torus = TorusCipher(88)
    faces = [FaceSecret(ck, nonce, i, c) for i, c in enumerate((0, 3, 0, 47, 1))]
    stored = torus.encrypt_faces(x, faces)
    pads = [cipher.derive_pad(ck, nonce, s.face_index, 88, s.candidate) for s in faces]
    assert stored.dtype == np.uint32
    assert np.array_equal(stored, np.stack([cipher.encrypt(cipher.to_torus(x[i]), p) for i, p in enumerate(pads)]))
    assert np.array_equal(torus.decrypt_faces(stored, faces), cipher.from_torus(cipher.to_torus(x)))
    assert np.array_equal(torus.latent(stored), cipher.from_torus(stored))
    # the group: encrypting twice is encrypting once under the combined pad
    again = [FaceSecret(ck, nonce, i, 5) for i in range(5)]
    twice = torus.encrypt_faces(torus.latent(stored), again)
    combined = torus.combine(torus.passwords(faces), torus.passwords(again))
    assert np.array_equal(twice, torus.encrypt(x, combined))
    assert (torus.id, torus.fingerprint, torus.algebra) == ("torus", NO_WEIGHTS, "exact-group")


@pytest.mark.parametrize("dim", [88, 96, 7, 2048])
def test_ifadit_round_trips_to_float_precision_on_any_dimension(dim):
    """88: dcgan64's identity; 96: the tiny stylegan2 codec's three W+ layers; odd sizes split
    unevenly; 2048: four 512-d W+ layers."""
    ifadit = random_flow_cipher(dim)
    x = np.random.default_rng(1).standard_normal((6, dim))
    stored = ifadit.encrypt_faces(x, secrets(6))
    assert stored.dtype == np.float64 and stored.shape == (6, dim)
    assert np.abs(stored - x).mean() > 0.05  # it moved
    assert np.abs(ifadit.decrypt_faces(stored, secrets(6)) - x).max() <= ROUND_TRIP_TOLERANCE
    # another candidate, or another photo's key, is another stranger and decrypts to another face
    other = ifadit.encrypt_faces(x, secrets(6, candidate=1))
    assert np.abs(other - stored).mean() > 1e-3
    wrong = ifadit.decrypt_faces(stored, secrets(6, content_key=bytes(32)))
    assert np.abs(wrong - x).mean() > 1e-3


def test_ifadit_refuses_what_it_cannot_encrypt():
    ifadit = random_flow_cipher(8)
    with pytest.raises(BadInput, match="shape"):
        ifadit.encrypt_faces(np.zeros((2, 9)), secrets(2))
    with pytest.raises(BadInput, match="NaN"):
        ifadit.encrypt_faces(np.full((1, 8), np.nan), secrets(1))
    with pytest.raises(BadInput, match="floating-point"):
        ifadit.decrypt_faces(np.zeros((1, 8), np.uint32), secrets(1))
    with pytest.raises(BadInput, match="no combined keys"):
        ifadit.combine(ifadit.passwords(secrets(1)), ifadit.passwords(secrets(1)))


def test_the_committed_ifadit_weights_are_small_and_named_by_their_fingerprint(pipeline):
    path = weights_path("ifadit", "dcgan64")
    assert path.stat().st_size <= 5_000_000
    ifadit = load_cipher("ifadit", pipeline.codec)
    state = torch.load(path, map_location="cpu", weights_only=True)["state"]
    assert ifadit.fingerprint == state_fingerprint(state) and len(ifadit.fingerprint) == 16
    assert (ifadit.dim, ifadit.algebra, ifadit.stored_dtype) == (pipeline.codec.identity_dim, "none", "<f8")


def test_an_unknown_cipher_is_one_clear_error(pipeline):
    assert CIPHERS == ("torus", "ifadit", "riddle", "facersa", "fit")
    with pytest.raises(BadInput, match="unknown cipher 'rot13'"):
        load_cipher("rot13", pipeline.codec)


# --- envelopes -----------------------------------------------------------------------------


def test_version_2_envelopes_still_recover(pipeline):
    """Made by the torus-only Veil, before envelopes named their cipher."""
    original = decode((OLD / "original.png").read_bytes())
    private = (OLD / "album.key").read_bytes()
    for fidelity in ("exact", "latent"):
        image, data = (OLD / f"{fidelity}.png").read_bytes(), (OLD / f"{fidelity}.envelope").read_bytes()
        env = envelope.Envelope.from_bytes(data)
        assert (env.version, env.cipher_id, env.cipher_fingerprint) == (2, "torus", NO_WEIGHTS)
        assert env.to_bytes() == data
        recovered = pipeline.recover(image, data, album_private=private).pixels
        if fidelity == "exact":
            assert np.array_equal(recovered, original)
        else:
            assert psnr(recovered, decode((OLD / "latent.recovered.png").read_bytes())) > 45


def test_a_float_identity_round_trips_in_version_3_and_is_refused_before():
    face = envelope.FaceRecord(
        transform=np.eye(2, 3),
        box=(0, 0, 4, 4),
        mask=np.full((8, 8), 255, np.uint8),
        attributes=np.zeros(3, np.float32),
        identity=np.array([0.1, -2.5, 1e-300, np.pi]),
    )
    ck = cipher.random_content_key()
    env = envelope.Envelope(
        codec_id="dcgan64",
        codec_fingerprint=bytes(16),
        cipher_id="ifadit",
        cipher_fingerprint=bytes(range(16)),
        fidelity="latent",
        sealed_content_key=keys.seal_content_key(ck, keys.generate_album_keypair()[1]),
        nonce=cipher.random_nonce(),
        image_size=(10, 10),
        faces=(face,),
    )
    back = envelope.Envelope.from_bytes(envelope.seal_envelope(env, ck).to_bytes())
    assert back.cipher_id == "ifadit" and back.cipher_fingerprint == bytes(range(16))
    assert back.faces[0].identity.dtype == np.float64
    assert back.faces[0].identity.tobytes() == face.identity.tobytes()
    with pytest.raises(EnvelopeError, match="torus"):
        dataclasses.replace(env, version=2, cipher_id="torus", cipher_fingerprint=NO_WEIGHTS).unsigned_bytes()


# --- real photos ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ifadit_pipeline(pipeline) -> Pipeline:
    return Pipeline(pipeline.codec, pipeline.detector, cipher=load_cipher("ifadit", pipeline.codec))


@pytest.fixture(scope="module")
def photo() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.open(DATA / "person_b_1.jpg").convert("RGB").save(out, "PNG")
    return out.getvalue()


def _decrypted(env: envelope.Envelope, private: bytes, face_cipher) -> np.ndarray:
    ck = keys.open_content_key(env.sealed_content_key, private)
    faces = [FaceSecret(ck, env.nonce, i, r.candidate) for i, r in enumerate(env.faces)]
    return face_cipher.decrypt_faces(np.stack([r.identity for r in env.faces]), faces)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torus", "ifadit"])
def test_a_real_photo_round_trips_through_each_cipher(pipeline, ifadit_pipeline, photo, album_keys, name):
    """Exact fidelity: the original pixels, bit for bit. Latent fidelity: the identity the codec
    encoded comes back (torus: its torus values exactly; iFADIT: within the documented
    tolerance), so the face rendered is the codec's reconstruction."""
    chosen = pipeline if name == "torus" else ifadit_pipeline
    private, public = album_keys
    original = decode_image(photo).pixels
    exact = chosen.anonymize(photo, public, fidelity="exact", fmt="PNG")
    assert envelope.Envelope.from_bytes(exact.envelope).cipher_id == name
    assert not np.array_equal(decode(exact.image), original)
    assert np.array_equal(chosen.recover(exact.image, exact.envelope, album_private=private).pixels, original)
    # exact fidelity needs no cipher at all: the envelope alone
    assert np.array_equal(pipeline.recover(exact.image, exact.envelope, album_private=private).pixels, original)

    latent = chosen.anonymize(photo, public, fidelity="latent", fmt="PNG")
    env = envelope.Envelope.from_bytes(latent.envelope)
    codec = chosen.codec
    crops = np.stack([crop(original, Alignment(r.transform, codec.crop_size)) for r in env.faces])
    direct = codec.encode(crops, np.zeros((len(crops), 5, 2))).identity
    identity = _decrypted(env, private, chosen.cipher)
    if name == "torus":
        assert np.array_equal(cipher.to_torus(identity), cipher.to_torus(direct))
    else:
        assert np.abs(identity - direct).max() <= ROUND_TRIP_TOLERANCE
    attributes = np.stack([r.attributes for r in env.faces])
    assert np.array_equal(
        codec.render(Latents(identity, attributes), typical=False),
        codec.render(Latents(direct, attributes), typical=False),
    )
    # any pipeline recovers it: the envelope names the cipher
    assert np.array_equal(
        chosen.recover(latent.image, latent.envelope, album_private=private).pixels,
        pipeline.recover(latent.image, latent.envelope, album_private=private).pixels,
    )


@pytest.mark.slow
def test_wrong_keys_give_other_faces(ifadit_pipeline, photo, album_keys):
    private, public = album_keys
    result = ifadit_pipeline.anonymize(photo, public, fidelity="latent", fmt="PNG")
    right = ifadit_pipeline.recover(result.image, result.envelope, album_private=private).pixels
    shown = decode(result.image)
    decoys = [
        ifadit_pipeline.recover(result.image, result.envelope, decoy_password=p).pixels
        for p in ("guess", "other guess")
    ]
    box = envelope.Envelope.from_bytes(result.envelope).faces[0].box
    region = np.s_[box[1] : box[3], box[0] : box[2]]
    for decoy in decoys:
        assert psnr(decoy[region], right[region]) < 30 and psnr(decoy[region], shown[region]) < 30
    assert not np.array_equal(decoys[0][region], decoys[1][region])


@pytest.mark.slow
def test_other_cipher_weights_or_an_unknown_cipher_are_refused(pipeline, ifadit_pipeline, photo, album_keys):
    private, public = album_keys
    result = ifadit_pipeline.anonymize(photo, public, fidelity="latent", fmt="PNG")
    retrained = Pipeline(pipeline.codec, pipeline.detector, cipher=random_flow_cipher(pipeline.codec.identity_dim))
    with pytest.raises(CipherMismatch, match="other ifadit cipher weights"):
        retrained.recover(result.image, result.envelope, album_private=private)
    # stored pixels need no cipher: an exact-fidelity photo still comes back, and so bit for bit
    exact = ifadit_pipeline.anonymize(photo, public, fidelity="exact", fmt="PNG")
    back = retrained.recover(exact.image, exact.envelope, album_private=private).pixels
    assert np.array_equal(back, decode_image(photo).pixels)
    with pytest.raises(CipherMismatch):  # … but its decoys are rendered, so they need the cipher
        retrained.recover(exact.image, exact.envelope, decoy_password="guess")
    env = envelope.Envelope.from_bytes(result.envelope)
    ck = keys.open_content_key(env.sealed_content_key, private)
    for cipher_id, message in (("fit", "other fit cipher weights"), ("torus", "other torus cipher weights")):
        forged = envelope.seal_envelope(dataclasses.replace(env, cipher_id=cipher_id), ck).to_bytes()
        with pytest.raises(CipherMismatch, match=message):
            pipeline.recover(result.image, forged, album_private=private)
    torus_labelled = dataclasses.replace(env, cipher_id="torus", cipher_fingerprint=NO_WEIGHTS)
    with pytest.raises(CipherMismatch, match="not what the torus cipher stores"):
        pipeline.recover(result.image, envelope.seal_envelope(torus_labelled, ck).to_bytes(), album_private=private)


@pytest.mark.slow
def test_the_cli_anonymizes_with_ifadit_and_recover_reads_the_cipher(tmp_path: Path, photo, capsys):
    (tmp_path / "in.png").write_bytes(photo)
    assert main(["keygen", "--out", str(tmp_path / "a.key"), "--public-out", str(tmp_path / "a.pub")]) == 0
    args = ["anonymize", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--public-key", str(tmp_path / "a.pub")]
    capsys.readouterr()
    assert main([*args, "--cipher", "rot13"]) == 2
    err = capsys.readouterr().err
    assert "unknown cipher 'rot13'" in err and err.count("\n") == 1
    assert main([*args, "--cipher", "ifadit", "--fidelity", "latent"]) == 0
    assert main(["inspect", str(tmp_path / "out.png"), "--json"]) == 0
    assert '"cipher": "ifadit"' in capsys.readouterr().out
    recover = ["recover", str(tmp_path / "out.png"), str(tmp_path / "back.png"), "--key", str(tmp_path / "a.key")]
    assert main(recover) == 0
    assert decode((tmp_path / "back.png").read_bytes()).shape == decode(photo).shape


@pytest.mark.slow
def test_ifadit_on_the_stylegan2_codec_with_tiny_random_checkpoints(tmp_path: Path, group_png, album_keys):
    from cipher_worker.codecs.stylegan2.codec import StyleGAN2Codec
    from tests.tiny_stylegan2 import write_checkpoints

    ckpts = write_checkpoints(tmp_path)
    codec = StyleGAN2Codec(ckpts["generator"], ckpts["e4e"], device="cpu")
    ifadit = random_flow_cipher(codec.identity_dim)
    sg = Pipeline(codec, cipher=ifadit)
    private, public = album_keys
    result = sg.anonymize(group_png, public, fidelity="latent", fmt="PNG")
    env = envelope.Envelope.from_bytes(result.envelope)
    assert env.cipher_id == "ifadit" and env.cipher_fingerprint == ifadit.fingerprint
    assert [r.identity.shape for r in env.faces] == [(codec.identity_dim,)] * 3 == [(96,)] * 3
    pixels = decode_image(group_png).pixels
    crops = np.stack([crop(pixels, Alignment(r.transform, codec.crop_size)) for r in env.faces])
    direct = codec.encode(crops, np.zeros((3, 5, 2))).identity
    assert np.abs(_decrypted(env, private, ifadit) - direct).max() <= ROUND_TRIP_TOLERANCE
    assert sg.recover(result.image, result.envelope, album_private=private).pixels.shape == pixels.shape
