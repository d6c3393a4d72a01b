"""The StyleGAN2 generator: its ops against straightforward implementations, the exact
rosinality checkpoint layout, and clear errors for checkpoints that are not right."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.signal import convolve2d

from cipher_worker.codecs.stylegan2.generator import (
    Generator,
    GeneratorSpec,
    build_generator,
    channels_for,
    load_generator,
    spec_from_state,
)
from cipher_worker.codecs.stylegan2.ops import (
    EqualLinear,
    ModulatedConv2d,
    StyledConv,
    fused_leaky_relu,
    make_kernel,
    upfirdn2d,
)
from cipher_worker.errors import BadCheckpoint
from lab.random_weights import random_generator_state
from tests.helpers import DATA

MANIFESTS = DATA / "stylegan2"
TINY = GeneratorSpec(size=32, style_dim=16, n_mlp=2, channels=(16, 16, 8, 8))


def _manifest(name: str) -> dict[str, list[int]]:
    return json.loads((MANIFESTS / name).read_text())["keys"]


def _save(path: Path, obj) -> Path:
    torch.save(obj, path)
    return path


# --- the ops, each against the textbook definition ---------------------------------------


def _upfirdn_reference(x: np.ndarray, kernel: np.ndarray, up: int, down: int, pad: tuple[int, int]) -> np.ndarray:
    """Zero insertion, padding (negative: cropping), full 2-D convolution, decimation, per plane."""
    out = []
    for plane in x.reshape(-1, *x.shape[-2:]):
        h, w = plane.shape
        z = np.zeros((h * up, w * up))
        z[::up, ::up] = plane
        p0, p1 = pad
        z = np.pad(z, ((max(p0, 0), max(p1, 0)),) * 2)
        z = z[max(-p0, 0) : z.shape[0] - max(-p1, 0), max(-p0, 0) : z.shape[1] - max(-p1, 0)]
        out.append(convolve2d(z, kernel, mode="valid")[::down, ::down])
    return np.stack(out).reshape(*x.shape[:-2], *out[0].shape)


@pytest.mark.parametrize(
    ("up", "down", "pad", "taps"),
    [(1, 1, (1, 1), (1, 3, 3, 1)), (2, 1, (2, 1), (1, 3, 3, 1)), (1, 2, (1, 1), (1, 2)), (2, 2, (-1, 2), (1, 3, 3, 1))],
)
def test_upfirdn2d_matches_its_definition(up, down, pad, taps):
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    # an asymmetric kernel catches a missing flip (correlation instead of convolution)
    kernel = make_kernel(taps).double() * torch.linspace(0.5, 1.5, len(taps)).double()[None, :]
    got = upfirdn2d(x, kernel, up=up, down=down, pad=pad).numpy()
    np.testing.assert_allclose(got, _upfirdn_reference(x.numpy(), kernel.numpy(), up, down, pad), atol=1e-12)


def test_equalized_linear_scales_weights_and_bias_at_run_time():
    layer = EqualLinear(8, 5, lr_mul=0.01, bias_init=0.3)
    x = torch.randn(4, 8)
    w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    expected = x.numpy() @ (w * 0.01 / math.sqrt(8)).T + b * 0.01
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    assert np.allclose(b, 0.3)  # stored as given: rosinality keeps biases unscaled by lr_mul at init
    layer.activate = True
    pre = expected
    np.testing.assert_allclose(
        layer(x).detach().numpy(), np.where(pre > 0, pre, 0.2 * pre) * math.sqrt(2), rtol=1e-5, atol=1e-6
    )


def test_fused_leaky_relu_adds_a_channel_bias_and_keeps_unit_gain():
    x, bias = torch.randn(2, 3, 4, 4), torch.randn(3)
    y = (x + bias[None, :, None, None]).numpy()
    np.testing.assert_allclose(fused_leaky_relu(x, bias).numpy(), np.where(y > 0, y, 0.2 * y) * math.sqrt(2), 1e-6)


def _modconv_reference(layer: ModulatedConv2d, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """One modulated (and demodulated) weight per sample, as the StyleGAN2 paper writes it."""
    outs = []
    for xb, sb in zip(x, style, strict=True):
        s = layer.modulation(sb[None])[0]
        w = layer.weight[0] * layer.scale * s[None, :, None, None]
        if layer.demodulate:
            w = w / torch.sqrt(w.square().sum((1, 2, 3), keepdim=True) + 1e-8)
        if layer.upsample:
            y = F.conv_transpose2d(xb[None], w.transpose(0, 1), stride=2)
            y = torch.from_numpy(_upfirdn_reference(y.numpy(), layer.blur.kernel.numpy(), 1, 1, layer.blur.pad))
        else:
            y = F.conv2d(xb[None], w, padding=layer.padding)
        outs.append(y.float())
    return torch.cat(outs)


@pytest.mark.parametrize(("kernel", "demodulate", "upsample"), [(3, True, False), (3, True, True), (1, False, False)])
def test_modulated_convolution_equals_per_sample_weights(kernel, demodulate, upsample):
    torch.manual_seed(0)
    layer = ModulatedConv2d(6, 5, kernel, 12, demodulate=demodulate, upsample=upsample)
    x, style = torch.randn(3, 6, 8, 8), torch.randn(3, 12)
    with torch.no_grad():
        got, expected = layer(x, style), _modconv_reference(layer, x, style)
    assert got.shape == (3, 5, 16 if upsample else 8, 16 if upsample else 8)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_styled_convolution_equals_its_stages_one_after_another():
    """StyledConv folds demodulation, noise, bias and gain into one pass; the result must be
    conv → demodulate → + noise·strength → + bias → leaky ReLU → ×√2, as written out here."""
    torch.manual_seed(1)
    layer = StyledConv(6, 5, 12, upsample=True)
    with torch.no_grad():
        layer.noise.weight.fill_(0.7)
        layer.activate.bias.normal_()
    x, style, noise = torch.randn(2, 6, 8, 8), torch.randn(2, 12), torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        conv = _modconv_reference(layer.conv, x, style)
        pre = conv + 0.7 * noise + layer.activate.bias[None, :, None, None]
        expected = F.leaky_relu(pre, 0.2) * math.sqrt(2)
        torch.testing.assert_close(layer(x, style, noise), expected, rtol=1e-4, atol=1e-5)


# --- the checkpoint layout ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "multiplier"), [("rosinality_256_cm2_g_ema_keys.json", 2), ("rosinality_256_cm1_g_ema_keys.json", 1)]
)
def test_layout_is_rosinalitys_exactly(name, multiplier):
    """The manifests list rosinality's own Generator(256, 512, 8, channel_multiplier) state dict."""
    keys = _manifest(name)
    spec = spec_from_state({k: torch.empty(shape) for k, shape in keys.items()})
    assert (spec.size, spec.style_dim, spec.n_mlp, spec.n_latent) == (256, 512, 8, 14)
    assert spec.channels == (512, 512, 512, 512, 256 * multiplier, 128 * multiplier, 64 * multiplier)
    assert channels_for(256, multiplier) == spec.channels
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in Generator(spec).state_dict().items()}
    assert ours == keys


def test_random_checkpoint_in_the_published_format_loads_and_renders(tmp_path):
    state = random_generator_state(TINY)
    path = _save(tmp_path / "g.pt", {"g_ema": state, "latent_avg": torch.randn(16)})
    generator = load_generator(path)
    assert generator.spec == TINY and generator.n_latent == 8
    w = generator.mapping(torch.randn(2, 16))
    wplus = w[:, None].expand(-1, generator.n_latent, -1)
    with torch.inference_mode():
        first, second = generator(wplus), generator(wplus)
    assert first.shape == (2, 3, 32, 32) and torch.isfinite(first).all() and first.std() > 0.01
    assert torch.equal(first, second), "fixed noise: the same W+ must render the same pixels"


def test_training_checkpoints_with_argparse_options_load(tmp_path):
    import argparse

    args = argparse.Namespace(size=32, channel_multiplier=2, n_mlp=2)
    state = random_generator_state(TINY)
    path = _save(
        tmp_path / "train.pt", {"g": state, "d": {}, "g_ema": state, "args": args, "latent_avg": torch.zeros(16)}
    )
    assert load_generator(path).spec == TINY


# --- clear errors ------------------------------------------------------------------------


def _error(path) -> str:
    with pytest.raises(BadCheckpoint) as err:
        load_generator(path)
    return str(err.value)


def test_missing_empty_truncated_and_foreign_files_are_refused_clearly(tmp_path):
    assert "does not exist" in _error(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "is empty" in _error(tmp_path / "empty.pt")
    good = _save(tmp_path / "g.pt", {"g_ema": random_generator_state(TINY)})
    (tmp_path / "cut.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "truncated or not a torch checkpoint" in _error(tmp_path / "cut.pt")
    (tmp_path / "photo.pt").write_bytes(b"\xff\xd8\xff\xe0 not a checkpoint")
    assert "truncated or not a torch checkpoint" in _error(tmp_path / "photo.pt")
    assert "holds a list" in _error(_save(tmp_path / "list.pt", [1, 2]))
    message = _error(_save(tmp_path / "other.pt", {"model": {}, "epoch": 3}))
    assert "no 'g_ema'" in message and "epoch" in message
    message = _error(_save(tmp_path / "e4e.pt", {"state_dict": {}, "opts": {}, "latent_avg": torch.zeros(16)}))
    assert "encoder checkpoint" in message and "VEIL_E4E_CKPT" in message


def test_a_renamed_or_misshaped_tensor_is_named(tmp_path):
    state = random_generator_state(TINY)
    renamed = dict(state)
    renamed["convs.1.activate.b"] = renamed.pop("convs.1.activate.bias")
    message = _error(_save(tmp_path / "renamed.pt", {"g_ema": renamed}))
    assert "missing: convs.1.activate.bias" in message and "unexpected: convs.1.activate.b" in message
    misshaped = dict(state)
    misshaped["to_rgbs.0.bias"] = torch.zeros(1, 4, 1, 1)
    assert "wrong shape: to_rgbs.0.bias (1, 4, 1, 1) (expected (1, 3, 1, 1))" in _error(
        _save(tmp_path / "shape.pt", {"g_ema": misshaped})
    )
    assert "latent_avg has shape (8,)" in _error(
        _save(tmp_path / "avg.pt", {"g_ema": state, "latent_avg": torch.zeros(8)})
    )
    with pytest.raises(BadCheckpoint, match="not a rosinality StyleGAN2 generator"):
        build_generator({"weight": torch.zeros(3)})
