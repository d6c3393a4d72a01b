"""The ``stylegan2`` codec end to end, with tiny random checkpoints in the published formats:
real photos through anonymize → recover, bit-exact identities, configuration, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cipher_worker import cipher, envelope, keys
from cipher_worker.align import Alignment, crop
from cipher_worker.cli import main
from cipher_worker.codecs import CodecConfig, codec_config, load_codec
from cipher_worker.codecs.base import Latents
from cipher_worker.codecs.stylegan2.codec import FFHQ_TEMPLATE, StyleGAN2Codec, parse_layers, scaled_layers
from cipher_worker.codecs.stylegan2.generator import GeneratorSpec
from cipher_worker.errors import BadCheckpoint, BadInput, CodecMismatch
from cipher_worker.imageio import decode_image
from cipher_worker.pipeline import Pipeline
from lab.random_weights import random_generator_state
from tests.helpers import DATA, decode
from tests.tiny_stylegan2 import write_checkpoints

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    return write_checkpoints(tmp_path_factory.mktemp("stylegan2"))


@pytest.fixture(scope="module")
def codec(ckpts) -> StyleGAN2Codec:
    return StyleGAN2Codec(ckpts["generator"], ckpts["e4e"], device="cpu")


@pytest.fixture(scope="module")
def sg_pipeline(codec) -> Pipeline:
    return Pipeline(codec)


def _identities(env: envelope.Envelope, private: bytes, dim: int) -> np.ndarray:
    content_key = keys.open_content_key(env.sealed_content_key, private)
    pads = [cipher.derive_face_keys(content_key, env.nonce, i, dim).pad for i in range(len(env.faces))]
    return np.stack([cipher.decrypt(r.identity, pad) for r, pad in zip(env.faces, pads, strict=True)])


def test_split_sizes_follow_the_identity_layers(codec):
    assert (codec.crop_size, codec.template.shape) == (64, (5, 2))
    assert list(codec.identity_layers) == [3, 4, 5]
    assert codec.identity_dim == 3 * 32 and codec.attribute_dim == 7 * 32
    assert len(codec.fingerprint) == 16


def test_a_real_photo_round_trips_with_bit_identical_identities(sg_pipeline, codec, group_png, album_keys):
    private, public = album_keys
    result = sg_pipeline.anonymize(group_png, public, fidelity="latent", fmt="PNG")
    assert len(result.faces) == 3
    env = envelope.Envelope.from_bytes(result.envelope)
    assert env.codec_id == "stylegan2" and env.codec_fingerprint == codec.fingerprint
    # encode the same faces directly: the envelope must give back exactly their torus identities
    pixels = decode_image(group_png).pixels
    crops = np.stack([crop(pixels, Alignment(r.transform, codec.crop_size)) for r in env.faces])
    direct = codec.encode(crops, np.zeros((3, 5, 2)))
    u = _identities(env, private, codec.identity_dim)
    assert np.array_equal(u, cipher.to_torus(direct.identity))
    assert np.array_equal(np.stack([r.attributes for r in env.faces]), direct.attributes)
    # the stored u′ is not u, and rendering from the recovered latents is deterministic
    assert not np.array_equal(np.stack([r.identity for r in env.faces]), u)
    latents = Latents(cipher.from_torus(u), direct.attributes)
    assert np.array_equal(codec.render(latents, typical=False), codec.render(latents, typical=False))
    recovered = sg_pipeline.recover(result.image, result.envelope, album_private=private)
    assert recovered.faces == 3 and recovered.pixels.shape == pixels.shape


def test_exact_fidelity_restores_the_original_pixels(sg_pipeline, group_png, album_keys):
    private, public = album_keys
    result = sg_pipeline.anonymize(group_png, public, fmt="PNG")
    assert not np.array_equal(decode(result.image), decode(group_png))
    assert np.array_equal(
        sg_pipeline.recover(result.image, result.envelope, album_private=private).pixels, decode(group_png)
    )


def test_psp_encoders_and_an_encoders_own_decoder_work_too(ckpts, group_png, album_keys):
    psp = StyleGAN2Codec(ckpts["generator"], ckpts["psp"], device="cpu")
    standalone = StyleGAN2Codec(None, ckpts["e4e_with_decoder"], device="cpu")
    assert len({psp.fingerprint, standalone.fingerprint}) == 2
    for codec in (psp, standalone):
        result = Pipeline(codec).anonymize(group_png, album_keys[1], fidelity="latent", fmt="PNG")
        env = envelope.Envelope.from_bytes(result.envelope)
        assert len(env.faces) == 3 and env.codec_fingerprint == codec.fingerprint


def test_an_envelope_from_other_weights_is_refused_clearly(sg_pipeline, ckpts, group_png, album_keys):
    private, public = album_keys
    result = sg_pipeline.anonymize(group_png, public, fidelity="latent", fmt="PNG")
    other = Pipeline(StyleGAN2Codec(ckpts["other_generator"], ckpts["e4e"], device="cpu"))
    with pytest.raises(CodecMismatch, match=r"anonymized with codec stylegan2 \([0-9a-f]{12}\), not stylegan2"):
        other.recover(result.image, result.envelope, album_private=private)
    with pytest.raises(CodecMismatch, match="not dcgan64"):
        Pipeline(load_codec("dcgan64")).recover(result.image, result.envelope, album_private=private)


def test_mismatched_pairs_and_missing_parts_are_refused(ckpts, tmp_path):
    small = tmp_path / "g32.pt"
    spec32 = GeneratorSpec(size=32, style_dim=32, n_mlp=2, channels=(32, 32, 16, 16))
    torch.save({"g_ema": random_generator_state(spec32)}, small)
    with pytest.raises(BadCheckpoint, match="predicts 10 W\\+ layers of 32, the generator \\(32 px\\) takes 8 of 32"):
        StyleGAN2Codec(small, ckpts["e4e"])
    with pytest.raises(BadInput, match="needs an e4e or pSp encoder checkpoint: set VEIL_E4E_CKPT"):
        StyleGAN2Codec(ckpts["generator"], None)
    with pytest.raises(BadInput, match="has no decoder weights: give the generator too"):
        StyleGAN2Codec(None, ckpts["e4e"])
    with pytest.raises(BadCheckpoint, match="not a generator; pass it as VEIL_E4E_CKPT"):
        StyleGAN2Codec(ckpts["e4e"], ckpts["e4e"])


def test_whitening_is_cached_next_to_the_checkpoint_and_whitens(ckpts, codec):
    cache = ckpts["generator"].with_name("g.pt.veil-pca.npz")
    assert cache.is_file()
    stamp = cache.stat().st_mtime_ns
    again = StyleGAN2Codec(ckpts["generator"], ckpts["e4e"])
    assert cache.stat().st_mtime_ns == stamp, "the second load reads the cache"
    np.testing.assert_array_equal(again.whitening.basis, codec.whitening.basis)
    with torch.inference_mode():
        w = codec.generator.mapping(torch.randn(20_000, 32, generator=torch.Generator().manual_seed(5)))
    x = codec.whitening.whiten(w.double().numpy())
    np.testing.assert_allclose(x.mean(0), 0, atol=0.05)
    np.testing.assert_allclose(np.cov(x.T), np.eye(32), atol=0.06)
    np.testing.assert_allclose(codec.whitening.unwhiten(x), w.double().numpy(), atol=1e-9)
    cache.write_bytes(b"garbage")  # a damaged cache is recomputed, never trusted
    assert np.allclose(StyleGAN2Codec(ckpts["generator"], ckpts["e4e"]).whitening.mean, codec.whitening.mean)


def test_identity_layers_scale_with_the_model_and_parse_clearly():
    assert scaled_layers((6, 9), 18) == range(6, 10)
    assert scaled_layers((6, 9), 14) == range(5, 8)
    assert scaled_layers((0, 17), 14) == range(0, 14)
    assert parse_layers("4–7") == (4, 7)
    for bad in ("6", "9-6", "a-b", "0-18"):
        with pytest.raises(BadInput, match="identity layers"):
            parse_layers(bad)


def test_configuration_comes_from_flags_then_environment(monkeypatch, ckpts):
    for name in (
        "VEIL_CODEC",
        "VEIL_STYLEGAN2_CKPT",
        "VEIL_E4E_CKPT",
        "VEIL_STYLEGAN2_IDENTITY_LAYERS",
        "VEIL_STYLEGAN2_ENCODER_BF16",
    ):
        monkeypatch.delenv(name, raising=False)
    assert codec_config() == CodecConfig("dcgan64")
    assert codec_config(e4e_ckpt="e.pt").name == "stylegan2"
    monkeypatch.setenv("VEIL_CODEC", "stylegan2")
    monkeypatch.setenv("VEIL_E4E_CKPT", str(ckpts["e4e"]))
    monkeypatch.setenv("VEIL_STYLEGAN2_CKPT", str(ckpts["generator"]))
    monkeypatch.setenv("VEIL_STYLEGAN2_IDENTITY_LAYERS", "4-9")
    config = codec_config()
    assert config == CodecConfig("stylegan2", str(ckpts["generator"]), str(ckpts["e4e"]), "4-9")
    assert codec_config(stylegan2_ckpt="other.pt").stylegan2_ckpt == "other.pt"
    codec = load_codec()
    assert isinstance(codec, StyleGAN2Codec) and list(codec.identity_layers) == [2, 3, 4, 5]
    assert not codec.encoder.bf16
    monkeypatch.setenv("VEIL_STYLEGAN2_ENCODER_BF16", "1")
    assert codec_config().encoder_bf16 and load_codec().encoder.bf16
    with pytest.raises(BadInput, match="unknown codec 'stylegan3'"):
        codec_config("stylegan3")


def test_cli_flags_anonymize_and_recover(ckpts, tmp_path, capsys):
    flags = ["--stylegan2-ckpt", str(ckpts["generator"]), "--e4e-ckpt", str(ckpts["e4e"])]
    assert main(["keygen", "--out", str(tmp_path / "k"), "--public-out", str(tmp_path / "k.pub")]) == 0
    source, anonymized, back = DATA / "person_a_1.jpg", tmp_path / "a.png", tmp_path / "b.png"
    assert main(["anonymize", str(source), str(anonymized), "--public-key", str(tmp_path / "k.pub"), *flags]) == 0
    assert main(["inspect", str(anonymized), "--json"]) == 0
    assert '"codec": "stylegan2"' in capsys.readouterr().out
    assert main(["recover", str(anonymized), str(back), "--key", str(tmp_path / "k"), *flags]) == 0
    assert np.array_equal(decode(back.read_bytes()), decode_image(source.read_bytes()).pixels)
    # an exact-fidelity photo comes back from its envelope alone, whatever codec is configured …
    assert main(["recover", str(anonymized), str(back), "--key", str(tmp_path / "k"), "--codec", "dcgan64"]) == 0
    assert np.array_equal(decode(back.read_bytes()), decode_image(source.read_bytes()).pixels)
    # … a latent one needs the codec that made it, and says which
    latent = tmp_path / "latent.png"
    public = ["--public-key", str(tmp_path / "k.pub")]
    assert main(["anonymize", str(source), str(latent), *public, "--fidelity", "latent", *flags]) == 0
    capsys.readouterr()
    assert main(["recover", str(latent), str(back), "--key", str(tmp_path / "k"), "--codec", "dcgan64"]) == 2
    assert "anonymized with codec stylegan2" in capsys.readouterr().err
    assert (
        main(
            [
                "anonymize",
                str(source),
                str(anonymized),
                "--public-key",
                str(tmp_path / "k.pub"),
                "--e4e-ckpt",
                str(tmp_path / "none.pt"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_faces_are_aligned_as_ffhq_aligns_them():
    """Veil aligns with YuNet's 5 points; e4e and FFHQ generators know crops made by NVIDIA's
    recipe on dlib's 68 landmarks. On real photos the two crops' corners must nearly coincide
    (a similarity from 5 points cannot follow every face's proportions: a few % of the side)."""
    from cipher_worker.align import align as align_face
    from lab.train.ffhq_template import ffhq_faces

    photos = [decode_image(path.read_bytes()).pixels for path in sorted(DATA.glob("*.jpg"))]
    corners = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], float)
    deviations = []
    for face, ffhq in ffhq_faces(photos):
        ours = align_face(face.landmarks, FFHQ_TEMPLATE * 256, 256)
        in_photo = np.c_[corners * 256, np.ones(4)] @ ours.inverse.T  # our crop's corners, photo pixels
        deviations.append(np.abs(ffhq.to_unit(in_photo) - corners).max())
    assert len(deviations) == 6
    assert np.mean(deviations) < 0.05 and max(deviations) < 0.08, deviations
