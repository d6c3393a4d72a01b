"""The e4e / pSp encoder loader: the published key layout, forward semantics, and clear errors for bad files.

Tiny random checkpoints in the published format stand in for the real ≈1 GB ones; the key manifests
in tests/data/stylegan2 were dumped from the original e4e and pSp code for their FFHQ configs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from cipher_worker.codecs.stylegan2.encoder import (
    StyleEncoder,
    infer_layout,
    load_encoder,
    make_layout,
)
from cipher_worker.errors import BadCheckpoint
from lab.random_weights import write_random_checkpoint
from tests.helpers import DATA

DATA = DATA / "stylegan2"
# input 16·2² = 64; 10 styles (a 64×64 generator) so that all three pyramid levels are used
TINY: dict[str, Any] = {
    "widths": (16, 32, 48, 64),
    "units": (1, 2, 2, 1),
    "n_styles": 10,
    "style_dim": 32,
    "coarse_convs": 2,
}
KINDS = ("e4e", "psp")
DECODER = {"style.1.weight": torch.ones(4, 4), "conv1.conv.weight": torch.zeros(1, 2, 3, 3)}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from a second thread, and lose a lot when another process holds the core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("encoders")
    return {
        kind: write_random_checkpoint(folder / f"{kind}.pt", kind, **TINY, decoder_state=DECODER, seed=i)
        for i, kind in enumerate(KINDS)
    }


@pytest.fixture(scope="module")
def images() -> Tensor:
    return torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(7)) * 2 - 1


def edited(src: Path, dst: Path, edit: Callable[[dict[str, Any]], Any]) -> Path:
    """A copy of checkpoint ``src`` with ``edit`` applied to its dict."""
    checkpoint = torch.load(src, weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, dst)
    return dst


def reference(checkpoint: dict[str, Any], images: Tensor, units: tuple[int, ...]) -> Tensor:
    """The original e4e / pSp forward written out with plain functional ops on the raw tensors."""
    s = {k.removeprefix("encoder."): v for k, v in checkpoint["state_dict"].items() if k.startswith("encoder.")}

    def conv(x: Tensor, name: str, stride: int = 1) -> Tensor:
        weight = s[f"{name}.weight"]
        return F.conv2d(x, weight, s.get(f"{name}.bias"), stride, weight.shape[-1] // 2)

    def bn(x: Tensor, name: str) -> Tensor:
        stats = [s[f"{name}.{k}"] for k in ("running_mean", "running_var", "weight", "bias")]
        return F.batch_norm(x, *stats, training=False, eps=1e-5)

    x = F.prelu(bn(conv(images, "input_layer.0"), "input_layer.1"), s["input_layer.2.weight"])
    stage_ends, firsts, i = [], set(), 0
    for count in units:
        firsts.add(i)
        i += count
        stage_ends.append(i - 1)
    features = []
    for i in range(sum(units)):
        p = f"body.{i}"
        stride = 2 if i in firsts else 1
        r = F.prelu(conv(bn(x, f"{p}.res_layer.0"), f"{p}.res_layer.1"), s[f"{p}.res_layer.2.weight"])
        r = bn(conv(r, f"{p}.res_layer.3", stride), f"{p}.res_layer.4")
        gate = conv(F.relu(conv(r.mean((2, 3), keepdim=True), f"{p}.res_layer.5.fc1")), f"{p}.res_layer.5.fc2")
        if f"{p}.shortcut_layer.0.weight" in s:
            shortcut = bn(conv(x, f"{p}.shortcut_layer.0", stride), f"{p}.shortcut_layer.1")
        else:
            shortcut = x[:, :, ::stride, ::stride]
        x = r * torch.sigmoid(gate) + shortcut
        if i in stage_ends:
            features.append(x)
    _, c1, c2, c3 = features

    def up_add(a: Tensor, b: Tensor) -> Tensor:
        return F.interpolate(a, size=b.shape[-2:], mode="bilinear", align_corners=True) + b

    p2 = up_add(c3, conv(c2, "latlayer1"))
    p1 = up_add(p2, conv(c1, "latlayer2"))
    codes = []
    for i in range(1 + max(int(k.split(".")[1]) for k in s if k.startswith("styles."))):
        h, j = (c3 if i < 3 else p2 if i < 7 else p1), 0
        while f"styles.{i}.convs.{j}.weight" in s:
            h, j = F.leaky_relu(conv(h, f"styles.{i}.convs.{j}", 2), 0.01), j + 2
        weight = s[f"styles.{i}.linear.weight"]
        codes.append(F.linear(h.flatten(1), weight / weight.shape[1] ** 0.5, s[f"styles.{i}.linear.bias"]))
    w = torch.stack(codes, 1)
    if checkpoint["opts"]["encoder_type"] == "Encoder4Editing":
        base = w[:, :1].repeat(1, w.shape[1], 1)
        base[:, 1:] += w[:, 1:]
        w = base
    if checkpoint["opts"]["start_from_latent_avg"]:
        w = w + checkpoint["latent_avg"]
    return w


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_checkpoints_load_and_encode(tiny: dict[str, Path], images: Tensor, kind: str) -> None:
    encoder, decoder = load_encoder(tiny[kind])
    assert (encoder.kind, encoder.input_size, encoder.n_styles, encoder.style_dim) == (kind, 64, 10, 32)
    assert not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
    assert decoder.keys() == DECODER.keys()
    torch.testing.assert_close(decoder["style.1.weight"], DECODER["style.1.weight"])
    with torch.no_grad():
        w = encoder(images)
    assert w.shape == (3, 10, 32)
    assert w.dtype == torch.float32
    assert torch.isfinite(w).all()
    assert (w[0] - w[1]).abs().mean() > 1e-2  # different faces, different codes
    assert w[0].std(0).mean() > 1e-2  # and the layers are not all the same


@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_a_plain_evaluation_of_the_original(tiny: dict[str, Path], images: Tensor, kind: str) -> None:
    expected = reference(torch.load(tiny[kind], weights_only=True), images, TINY["units"])
    with torch.no_grad():
        w = load_encoder(tiny[kind])[0](images)
    torch.testing.assert_close(w, expected, atol=1e-4, rtol=1e-4)


def test_bf16_stays_close_to_float32(tiny: dict[str, Path], images: Tensor) -> None:
    with torch.no_grad():
        exact = load_encoder(tiny["e4e"])[0](images)
        fast = load_encoder(tiny["e4e"], bf16=True)[0](images)
    assert fast.dtype == torch.float32
    assert (fast - exact).abs().mean() < 0.02 * exact.std()


def with_opts(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def edit(c: dict[str, Any]) -> None:
        c["opts"].update(changes)

    return edit


def test_e4e_adds_its_offsets_to_the_base_code(tiny: dict[str, Path], images: Tensor, tmp_path: Path) -> None:
    encoder = load_encoder(edited(tiny["e4e"], tmp_path / "e4e.pt", with_opts(start_from_latent_avg=False)))[0]
    as_psp = with_opts(encoder_type="GradualStyleEncoder", start_from_latent_avg=False)
    psp = load_encoder(edited(tiny["e4e"], tmp_path / "psp.pt", as_psp))[0]
    with torch.no_grad():
        w, raw = encoder(images), psp(images)  # same weights: raw = [base, offset_1, offset_2, …]
    torch.testing.assert_close(w[:, 0], raw[:, 0])
    torch.testing.assert_close(w[:, 1:], raw[:, 1:] + raw[:, :1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(32,), (1, 32), (10, 32)])
def test_latent_avg_in_every_published_shape(
    tiny: dict[str, Path], images: Tensor, tmp_path: Path, shape: tuple[int, ...]
) -> None:
    avg = torch.linspace(-1, 1, 32)
    rows = avg + torch.arange(10.0)[:, None] if shape == (10, 32) else avg.reshape(shape)  # per-layer or one W
    encoder = load_encoder(edited(tiny["psp"], tmp_path / "avg.pt", lambda c: c.update(latent_avg=rows)))[0]
    plain = load_encoder(edited(tiny["psp"], tmp_path / "plain.pt", with_opts(start_from_latent_avg=False)))[0]
    with torch.no_grad():
        offset = encoder(images) - plain(images)
    torch.testing.assert_close(offset, rows.reshape(-1, 32).expand(3, 10, 32), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_module_keys_equal_the_original_ffhq_encoder(kind: str) -> None:
    """Built from the original key set alone, the encoder has exactly the original keys and shapes."""
    manifest = json.loads((DATA / f"{kind}_ffhq_encoder_keys.json").read_text())["keys"]
    published = {k.removeprefix("encoder."): torch.empty(shape, device="meta") for k, shape in manifest.items()}
    layout = infer_layout(published)
    assert layout == make_layout()  # IR-SE-50: stages of 3/4/14/3 units, 18 styles of 512
    assert layout.taps == (6, 20, 23)
    assert layout.input_size == 256
    with torch.device("meta"):
        encoder = StyleEncoder(kind, layout)
    assert {f"encoder.{k}": list(v.shape) for k, v in encoder.state_dict().items()} == manifest


def test_write_random_checkpoint_uses_the_published_format(tiny: dict[str, Path]) -> None:
    e4e, psp = (torch.load(tiny[kind], weights_only=True) for kind in KINDS)
    for checkpoint in (e4e, psp):
        assert set(checkpoint) == {"state_dict", "opts", "latent_avg"}
        assert checkpoint["latent_avg"].shape == (10, 32)
        assert {k.split(".")[0] for k in checkpoint["state_dict"]} == {"encoder", "decoder"}
    assert e4e["opts"]["encoder_type"] == "Encoder4Editing"
    assert e4e["opts"]["stylegan_size"] == 64
    assert psp["opts"]["encoder_type"] == "GradualStyleEncoder"
    assert (psp["opts"]["output_size"], psp["opts"]["n_styles"], psp["opts"]["input_nc"]) == (64, 10, 3)


def test_wrong_input_size_is_refused(tiny: dict[str, Path]) -> None:
    encoder = load_encoder(tiny["psp"])[0]
    with pytest.raises(ValueError, match=r"\(N, 3, 64, 64\)"):
        encoder(torch.zeros(1, 3, 256, 256))


def _rename(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def edit(c: dict[str, Any]) -> None:
        c["state_dict"][new] = c["state_dict"].pop(old)

    return edit


def _reshape(key: str) -> Callable[[dict[str, Any]], None]:
    def edit(c: dict[str, Any]) -> None:
        c["state_dict"][key] = torch.zeros(3, 3)

    return edit


BROKEN: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "renamed key": (
        _rename("encoder.styles.4.convs.2.bias", "encoder.styles.4.convs.2.b"),
        "missing: styles.4.convs.2.bias; unexpected: styles.4.convs.2.b",
    ),
    "missing backbone key": (
        lambda c: c["state_dict"].pop("encoder.body.3.res_layer.1.weight"),
        "has no encoder.body.3.res_layer.1.weight",
    ),
    "mis-shaped tensor": (_reshape("encoder.latlayer1.weight"), r"wrong shape: latlayer1.weight \(3, 3\)"),
    "unsupported encoder": (
        with_opts(encoder_type="BackboneEncoderUsingLastLayerIntoW"),
        "'BackboneEncoderUsingLastLayerIntoW'; supported: Encoder4Editing",
    ),
    "n_styles disagrees": (with_opts(n_styles=18), "18 W\\+ layers but its encoder has 10 style"),
    "output_size disagrees": (
        lambda c: c["opts"].update(n_styles=None, output_size=1024),  # pSp checkpoints older than n_styles
        "18 W\\+ layers but its encoder has 10 style",
    ),
    "no opts": (lambda c: c.pop("opts"), "has no 'opts'"),
    "no encoder_type": (lambda c: c["opts"].pop("encoder_type"), "does not say its encoder_type"),
    "no state_dict": (lambda c: c.pop("state_dict"), "has no 'state_dict'"),
    "no latent_avg": (lambda c: c.pop("latent_avg"), "has no 'latent_avg'"),
    "bad latent_avg": (lambda c: c.update(latent_avg=torch.zeros(3, 32)), r"latent_avg is \(3, 32\)"),
    "inconsistent style blocks": (
        _rename("encoder.styles.0.convs.2.weight", "encoder.styles.0.convs.4.weight"),
        "style block 0 has 3 convolutions, expected 2",
    ),
    "grey-scale input": (
        lambda c: c["state_dict"].update({"encoder.input_layer.0.weight": torch.zeros(16, 1, 3, 3)}),
        "1-channel inputs",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_checkpoints_are_named_clearly(tiny: dict[str, Path], tmp_path: Path, case: str) -> None:
    edit, message = BROKEN[case]
    path = edited(tiny["psp"], tmp_path / "broken.pt", edit)
    with pytest.raises(BadCheckpoint, match=message) as info:
        load_encoder(path)
    assert "\n" not in str(info.value)


def test_unreadable_files_are_named_clearly(tiny: dict[str, Path], tmp_path: Path) -> None:
    cases = {"missing.pt": "does not exist", "empty.pt": "is empty", "half.pt": "cannot be read"}
    cases |= {"list.pt": "holds a list, not a checkpoint dict", "rosinality.pt": "rosinality.*VEIL_STYLEGAN2_CKPT"}
    (tmp_path / "empty.pt").touch()
    data = tiny["e4e"].read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    torch.save([1, 2, 3], tmp_path / "list.pt")
    torch.save(
        {"g_ema": {"style.1.weight": torch.zeros(2, 2)}, "latent_avg": torch.zeros(512)}, tmp_path / "rosinality.pt"
    )
    for name, message in cases.items():
        with pytest.raises(BadCheckpoint, match=message) as info:
            load_encoder(tmp_path / name)
        assert "\n" not in str(info.value)
