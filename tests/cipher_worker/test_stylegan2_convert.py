"""The StyleGAN2-ADA → rosinality converter, on state dicts with the exact names and shapes of real ones.

The manifests in tests/data/stylegan2 were generated from the real model code (NVlabs
stylegan2-ada-pytorch and rosinality stylegan2-pytorch, commits in their "config"); numeric
equivalence of the converted generator was checked outside the test suite against both codebases.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from cipher_worker.codecs.stylegan2.convert import convert_state_dict, main
from cipher_worker.errors import BadCheckpoint
from tests.helpers import DATA

DATA = DATA / "stylegan2"
FILTER = torch.outer(torch.tensor([1.0, 3.0, 3.0, 1.0]), torch.tensor([1.0, 3.0, 3.0, 1.0])) / 64


def manifest(name: str) -> dict[str, list[int]]:
    return json.loads((DATA / name).read_text())["keys"]


def ada_state(name: str = "ada_paper256_g_ema_keys.json", max_res: int | None = None) -> dict[str, torch.Tensor]:
    """Random tensors with the manifest's names and shapes (the resampling filters get their real value)."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in manifest(name).items():
        if max_res is not None and key.startswith("synthesis.b") and int(key.split(".")[1][1:]) > max_res:
            continue
        state[key] = FILTER.clone() if key.endswith("resample_filter") else torch.randn(shape, generator=gen)
    return state


@pytest.mark.parametrize(
    ("ada", "rosinality"),
    [
        ("ada_paper256_g_ema_keys.json", "rosinality_256_cm1_g_ema_keys.json"),  # channel_base 16384
        ("ada_stylegan2_256_g_ema_keys.json", "rosinality_256_cm2_g_ema_keys.json"),  # channel_base 32768
    ],
)
def test_converts_to_the_rosinality_layout(ada: str, rosinality: str) -> None:
    converted = convert_state_dict(ada_state(ada))
    expected = manifest(rosinality)
    assert list(converted.g_ema) == list(expected)  # same keys, in rosinality's state_dict order
    assert {k: list(v.shape) for k, v in converted.g_ema.items()} == expected
    assert all(v.dtype == torch.float32 for v in converted.g_ema.values())
    assert converted.latent_avg.shape == (512,)
    assert (converted.resolution, converted.n_mlp, converted.w_dim, converted.n_latent) == (256, 8, 512, 14)


def test_tensors_land_where_rosinality_reads_them() -> None:
    src = ada_state()
    g = convert_state_dict(src).g_ema
    assert torch.equal(g["style.1.weight"], src["mapping.fc0.weight"])  # same lr-multiplier convention: raw copy
    assert torch.equal(g["style.8.bias"], src["mapping.fc7.bias"])
    assert torch.equal(g["input.input"][0], src["synthesis.b4.const"])
    assert torch.equal(g["conv1.conv.weight"][0], src["synthesis.b4.conv1.weight"])
    assert torch.equal(g["conv1.conv.modulation.bias"], src["synthesis.b4.conv1.affine.bias"])
    assert torch.equal(g["convs.0.conv.weight"][0], src["synthesis.b8.conv0.weight"])
    assert torch.equal(g["convs.11.activate.bias"], src["synthesis.b256.conv1.bias"])
    assert g["convs.3.noise.weight"].item() == src["synthesis.b16.conv1.noise_strength"].item()
    # one noise map per conv layer from 4×4 up: 0 = b4.conv1, 1 = b8.conv0, 2 = b8.conv1, …
    assert torch.equal(g["noises.noise_0"][0, 0], src["synthesis.b4.conv1.noise_const"])
    assert torch.equal(g["noises.noise_1"][0, 0], src["synthesis.b8.conv0.noise_const"])
    assert torch.equal(g["noises.noise_12"][0, 0], src["synthesis.b256.conv1.noise_const"])
    assert torch.equal(g["to_rgb1.bias"].flatten(), src["synthesis.b4.torgb.bias"])
    assert torch.equal(g["to_rgbs.5.conv.weight"][0], src["synthesis.b256.torgb.weight"])
    assert torch.allclose(g["convs.0.conv.blur.kernel"], FILTER * 4)  # rosinality's make_kernel([1,3,3,1]) × 2²
    assert torch.allclose(g["to_rgbs.0.upsample.kernel"], FILTER * 4)


def test_w_avg_becomes_latent_avg_and_g_ema_wrapper_is_accepted() -> None:
    src = ada_state(max_res=8)
    converted = convert_state_dict({"G_ema": src})
    assert torch.equal(converted.latent_avg, src["mapping.w_avg"])
    assert converted.resolution == 8 and converted.n_latent == 4


def test_fp16_input_gives_float32_output() -> None:
    src = {k: v.half() for k, v in ada_state(max_res=16).items()}
    converted = convert_state_dict(src)
    assert {v.dtype for v in converted.g_ema.values()} == {torch.float32}
    assert converted.latent_avg.dtype == torch.float32
    assert torch.equal(converted.g_ema["style.1.weight"], src["mapping.fc0.weight"].float())


def test_conditional_model_is_rejected() -> None:
    src = ada_state(max_res=8)
    src["mapping.embed.weight"] = torch.randn(512, 10)
    src["mapping.embed.bias"] = torch.randn(512)
    src["mapping.fc0.weight"] = torch.randn(512, 1024)  # z ⊕ embedded label
    with pytest.raises(BadCheckpoint, match="conditional"):
        convert_state_dict(src)


def test_resnet_architecture_is_rejected() -> None:
    src = ada_state(max_res=16)
    src["synthesis.b8.skip.weight"] = torch.randn(512, 512, 1, 1)
    src["synthesis.b16.skip.weight"] = torch.randn(512, 512, 1, 1)
    with pytest.raises(BadCheckpoint, match="'resnet'"):
        convert_state_dict(src)


def test_orig_architecture_is_rejected() -> None:
    src = ada_state(max_res=16)
    for key in [k for k in src if k.startswith(("synthesis.b4.torgb.", "synthesis.b8.torgb."))]:
        del src[key]  # 'orig' has a ToRGB in the last block only
    with pytest.raises(BadCheckpoint, match=r"'skip'.*synthesis\.b4\.torgb|synthesis\.b4\.torgb.*'skip'"):
        convert_state_dict(src)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update({"synthesis.b8.conv0.resample_filter": torch.ones(4, 4) / 16}), r"\[1,3,3,1\]"),
        (lambda s: s.pop("mapping.w_avg"), "mapping.w_avg"),
        (lambda s: s.update({"synthesis.b8.conv1.weight": torch.randn(512, 256, 3, 3)}), "shape"),
        (lambda s: s.update({"extra.thing": torch.zeros(1)}), "cannot express: extra.thing"),
        (lambda s: s.update({"synthesis.input.affine.weight": torch.zeros(4, 512)}), "StyleGAN3"),
        (lambda s: s.update({"g_ema": {}}), "already a rosinality"),
    ],
)
def test_unconvertible_inputs_get_clear_errors(edit, message: str) -> None:
    src = ada_state(max_res=8)
    edit(src)
    with pytest.raises(BadCheckpoint, match=message):
        convert_state_dict(src)


def test_cli_converts_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "g_ema_ada.pt"
    out = tmp_path / "g_rosinality.pt"
    state = {k: v.half() for k, v in ada_state(max_res=8).items()}
    torch.save(state, src)
    assert main([str(src), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "8×8" in printed and "8 mapping layers" in printed and "w_dim 512" in printed
    ckpt = torch.load(out, map_location="cpu", weights_only=True)
    assert set(ckpt) == {"g_ema", "latent_avg"}
    assert torch.equal(ckpt["latent_avg"], state["mapping.w_avg"].float())
    assert {p.name for p in tmp_path.iterdir()} == {src.name, out.name}  # no temporary file left behind


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_cli_errors_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.pt"
    assert main([str(tmp_path / "missing.pt"), str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err

    conditional = ada_state(max_res=8)
    conditional["mapping.embed.weight"] = torch.randn(512, 10)
    torch.save(conditional, tmp_path / "cond.pt")
    assert main([str(tmp_path / "cond.pt"), str(out)]) == 2
    err = capsys.readouterr().err
    assert "conditional" in err and err.count("\n") == 1

    # a code-carrying network pickle (as ADA writes them) is refused, with a hint on exporting it
    (tmp_path / "network.pkl").write_bytes(pickle.dumps({"G_ema": object()}))
    assert main([str(tmp_path / "network.pkl"), str(out)]) == 2
    assert "docs/stylegan2.md" in capsys.readouterr().err
    torch.save({"G_ema": torch.nn.Linear(2, 2)}, tmp_path / "module.pt")  # a whole module, not its state dict
    assert main([str(tmp_path / "module.pt"), str(out)]) == 2
    assert "pickled Python objects" in capsys.readouterr().err
    assert not out.exists()

    assert main([]) == 2  # usage error
    assert main([str(tmp_path / "cond.pt"), str(tmp_path / "cond.pt")]) == 2
    assert "input path" in capsys.readouterr().err
