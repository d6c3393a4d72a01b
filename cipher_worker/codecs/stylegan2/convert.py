"""Convert an NVlabs StyleGAN2-ADA (PyTorch) generator to the rosinality checkpoint layout.

Usage: ``python -m cipher_worker.codecs.stylegan2.convert ADA_STATE.pt OUT.pt``

ADA network pickles (``*.pkl``) embed their Python code and can only be unpickled inside a
stylegan2-ada-pytorch checkout, so the deployer first exports the generator's state dict there::

    python -c "import torch, legacy; G = legacy.load_network_pkl(open('ffhq.pkl', 'rb'))['G_ema']; \
torch.save(G.state_dict(), 'g_ema_ada.pt')"

(``legacy.load_network_pkl`` also reads NVlabs' original TensorFlow StyleGAN2 pickles, without
TensorFlow.) This module then reads that file with ``weights_only`` loading - nothing in it can
run code - and writes ``{"g_ema": <rosinality Generator state dict>, "latent_avg": (w_dim,)}``.

The two implementations compute the same function, tensor for tensor:

* mapping ``fc{i}`` → ``style.{i+1}`` (``style.0`` is the parameter-free PixelNorm, ADA's
  ``normalize_2nd_moment``). Both store raw weights and apply the learning-rate multiplier at run
  time - ADA ``weight * lr/√in`` and ``bias * lr``, rosinality ``weight * lr_mul/√in`` and
  ``bias * lr_mul`` - so the tensors are copied unchanged; both default to lr 0.01.
* ``affine`` (ADA initialises its bias to 1) → ``modulation``; copied.
* synthesis conv weights gain a leading batch dim. ADA modulates the raw weight and rosinality the
  weight times 1/√fan_in; demodulation cancels that factor (up to the 1e-8 epsilon).
* ToRGB: ADA multiplies the styles by 1/√(in·k²) and does not demodulate; rosinality's
  ``ModulatedConv2d(demodulate=False)`` multiplies the weight by the same 1/√fan_in. Bias (3,) →
  (1, 3, 1, 1).
* ``noise_strength`` → ``noise.weight``, ``noise_const`` → ``noises.noise_{k}`` (one per conv layer
  from 4×4 up), ``bias`` → ``activate.bias`` (both apply leaky ReLU 0.2 with gain √2 after it).
* ADA's ``resample_filter`` buffers (normalised [1,3,3,1] outer product) are checked and dropped;
  rosinality builds the same filter with the same ×4 upsampling gain as ``blur.kernel`` and
  ``upsample.kernel`` buffers, written here so the state dict loads strictly.

What differs: ADA's training configs set ``conv_clamp`` = 256, which clamps the output of every
synthesis layer and ToRGB to ±256 (a guard against fp16 overflow, applied in fp32 layers too);
rosinality has no clamp, so outputs differ only where an activation went beyond ±256 (never, in
our random-weight comparisons). The converted model runs in float32 throughout (fp16 inputs are
cast). Not expressible in the rosinality layout, and
rejected: conditional models (``mapping.embed``), 'orig' and 'resnet' synthesis architectures,
kernels other than 3×3/1×1, filters other than [1,3,3,1], non-RGB output, z_dim ≠ w_dim and
StyleGAN3 generators. A non-default mapping lr multiplier or activation leaves no trace in a state
dict; no released ADA config uses one.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...errors import BadCheckpoint, VeilError
from .checkpoint import read_checkpoint, write_atomically
from .ops import BLUR_TAPS, make_kernel

WHAT = "StyleGAN2-ADA state dict"
_EXPORT_HINT = (
    "ADA .pkl files must first be exported to a state dict inside a stylegan2-ada-pytorch checkout "
    "(see docs/stylegan2.md)"
)
_BLOCK_RE = re.compile(r"^synthesis\.b(\d+)\.")
_FC_RE = re.compile(r"^mapping\.fc(\d+)\.weight$")


@dataclass(frozen=True)
class Converted:
    """The rosinality-layout checkpoint and what it describes."""

    g_ema: dict[str, torch.Tensor]
    latent_avg: torch.Tensor
    resolution: int
    n_mlp: int
    w_dim: int
    n_latent: int

    def checkpoint(self) -> dict[str, Any]:
        return {"g_ema": self.g_ema, "latent_avg": self.latent_avg}


def _f32(t: torch.Tensor) -> torch.Tensor:
    # clone: the source may be memory-mapped, and the output must not alias it
    return t.detach().to(torch.float32).contiguous().clone()


class _Reader:
    """Typed access to the ADA state dict, with errors naming the offending tensor."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        self.state = state
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.state

    def get(self, key: str, shape: tuple[int | None, ...] | None = None) -> torch.Tensor:
        if key not in self.state:
            raise BadCheckpoint(f"{WHAT} has no {key!r}; is it the state_dict() of an ADA G_ema?")
        t = self.state[key]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise BadCheckpoint(f"{WHAT}: {key} is not a floating-point tensor")
        if shape is not None and (
            t.ndim != len(shape)
            or any(want is not None and got != want for got, want in zip(t.shape, shape, strict=True))
        ):
            want_s = "(" + ", ".join("*" if d is None else str(d) for d in shape) + ")"
            raise BadCheckpoint(f"{WHAT}: {key} has shape {tuple(t.shape)}, expected {want_s}")
        self.used.add(key)
        return t


def _unwrap(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ADA generator state dict inside ``data``: the dict itself, or its ``G_ema`` entry."""
    if "g_ema" in data:
        raise BadCheckpoint(f"{WHAT} is already a rosinality-format checkpoint (it has 'g_ema'); use it as is")
    inner = data.get("G_ema")
    if isinstance(inner, Mapping):
        data = inner
    elif inner is not None:
        raise BadCheckpoint(f"{WHAT}: 'G_ema' holds a {type(inner).__name__}, not a state dict; {_EXPORT_HINT}")
    if any(str(k).startswith("synthesis.input.") or re.match(r"synthesis\.L\d+_", str(k)) for k in data):
        raise BadCheckpoint(f"{WHAT} is a StyleGAN3 generator; only StyleGAN2(-ADA) generators can be converted")
    if not any(str(k).startswith("mapping.") for k in data) or not any(str(k).startswith("synthesis.") for k in data):
        have = ", ".join(sorted(map(str, data))[:5]) or "nothing"
        raise BadCheckpoint(f"{WHAT} has no mapping./synthesis. tensors (it has: {have}); {_EXPORT_HINT}")
    return data


def _check_filter(r: _Reader, key: str) -> None:
    """Consume an ADA ``resample_filter`` buffer after checking it is the [1,3,3,1] filter rosinality uses."""
    if not r.has(key):
        return  # buffers are redundant; tolerate a state dict saved without them
    f = r.get(key).to(torch.float32)
    want = make_kernel(BLUR_TAPS)
    if f.shape != want.shape or not torch.allclose(f, want, atol=1e-6):
        raise BadCheckpoint(
            f"{WHAT}: {key} is not the [1,3,3,1] resampling filter; the rosinality layout supports only that one"
        )


def _mapping(r: _Reader, out: dict[str, torch.Tensor]) -> tuple[int, int]:
    if any(str(k).startswith("mapping.embed.") for k in r.state):
        raise BadCheckpoint(f"{WHAT} is a conditional (class-label) generator; only unconditional ones convert")
    indices = sorted(int(m.group(1)) for k in r.state if (m := _FC_RE.match(str(k))))
    if not indices or indices != list(range(len(indices))):
        raise BadCheckpoint(f"{WHAT}: mapping layers mapping.fc0… are missing or not numbered 0..n-1")
    w_dim = r.get(f"mapping.fc{indices[-1]}.weight", (None, None)).shape[0]
    for i in indices:
        weight = r.get(f"mapping.fc{i}.weight", (None, None))
        if tuple(weight.shape) != (w_dim, w_dim):
            raise BadCheckpoint(
                f"{WHAT}: mapping.fc{i}.weight has shape {tuple(weight.shape)}; the rosinality layout needs every "
                f"mapping layer {w_dim}→{w_dim} (z_dim = layer width = w_dim)"
            )
        out[f"style.{i + 1}.weight"] = _f32(weight)
        out[f"style.{i + 1}.bias"] = _f32(r.get(f"mapping.fc{i}.bias", (w_dim,)))
    return len(indices), w_dim


def _synthesis_layer(
    r: _Reader,
    src: str,
    dst: str,
    *,
    c_in: int,
    w_dim: int,
    res: int,
    upsample: bool,
    out: dict[str, torch.Tensor],
) -> tuple[int, torch.Tensor]:
    """One ADA ``SynthesisLayer`` → rosinality ``StyledConv``; returns (out channels, noise buffer)."""
    weight = r.get(f"{src}.weight", (None, c_in, None, None))
    if tuple(weight.shape[2:]) != (3, 3):
        raise BadCheckpoint(f"{WHAT}: {src}.weight has a {tuple(weight.shape[2:])} kernel; only 3×3 is supported")
    c_out = weight.shape[0]
    out[f"{dst}.conv.weight"] = _f32(weight).unsqueeze(0)
    if upsample:
        out[f"{dst}.conv.blur.kernel"] = make_kernel(BLUR_TAPS, gain=4.0)
    out[f"{dst}.conv.modulation.weight"] = _f32(r.get(f"{src}.affine.weight", (c_in, w_dim)))
    out[f"{dst}.conv.modulation.bias"] = _f32(r.get(f"{src}.affine.bias", (c_in,)))
    if r.has(f"{src}.noise_strength"):
        out[f"{dst}.noise.weight"] = _f32(r.get(f"{src}.noise_strength", ())).reshape(1)
        noise = _f32(r.get(f"{src}.noise_const", (res, res))).reshape(1, 1, res, res)
    else:  # trained with use_noise=False: a zero-strength noise input is the same function
        out[f"{dst}.noise.weight"] = torch.zeros(1)
        noise = torch.zeros(1, 1, res, res)
    out[f"{dst}.activate.bias"] = _f32(r.get(f"{src}.bias", (c_out,)))
    _check_filter(r, f"{src}.resample_filter")
    return c_out, noise


def _torgb(
    r: _Reader, src: str, dst: str, *, c_in: int, w_dim: int, upsample: bool, out: dict[str, torch.Tensor]
) -> None:
    """ADA ``ToRGBLayer`` → rosinality ``ToRGB`` (same 1/√fan_in modulation, no demodulation)."""
    if not r.has(f"{src}.weight"):
        raise BadCheckpoint(
            f"{WHAT} has no {src}: not a 'skip' synthesis architecture ('orig'?); the rosinality layout needs "
            "a ToRGB in every block"
        )
    weight = r.get(f"{src}.weight", (None, c_in, 1, 1))
    if weight.shape[0] != 3:
        raise BadCheckpoint(f"{WHAT}: the generator outputs {weight.shape[0]} channels; only RGB (3) is supported")
    out[f"{dst}.bias"] = _f32(r.get(f"{src}.bias", (3,))).reshape(1, 3, 1, 1)
    if upsample:
        out[f"{dst}.upsample.kernel"] = make_kernel(BLUR_TAPS, gain=4.0)
    out[f"{dst}.conv.weight"] = _f32(weight).unsqueeze(0)
    out[f"{dst}.conv.modulation.weight"] = _f32(r.get(f"{src}.affine.weight", (c_in, w_dim)))
    out[f"{dst}.conv.modulation.bias"] = _f32(r.get(f"{src}.affine.bias", (c_in,)))


def convert_state_dict(data: Mapping[str, Any]) -> Converted:
    """Map an ADA ``G_ema.state_dict()`` (or a dict holding it as ``G_ema``) to the rosinality layout.

    Keys come out in the order of rosinality's ``Generator.state_dict()``; every tensor is float32."""
    r = _Reader(_unwrap(data))
    style: dict[str, torch.Tensor] = {}
    n_mlp, w_dim = _mapping(r, style)
    latent_avg = _f32(r.get("mapping.w_avg", (w_dim,)))

    resolutions = sorted({int(m.group(1)) for k in r.state if (m := _BLOCK_RE.match(str(k)))})
    expected = [2**i for i in range(2, 2 + len(resolutions))]
    if resolutions != expected:
        found = ", ".join(f"b{res}" for res in resolutions) or "none"
        raise BadCheckpoint(f"{WHAT}: synthesis blocks are {found}; expected b4, b8, … doubling up to the output")
    if any(r.has(f"synthesis.b{res}.skip.weight") for res in resolutions):
        raise BadCheckpoint(f"{WHAT} uses the 'resnet' synthesis architecture; only 'skip' can be converted")

    head: dict[str, torch.Tensor] = {}  # input, conv1, to_rgb1
    convs: dict[str, torch.Tensor] = {}
    to_rgbs: dict[str, torch.Tensor] = {}
    noises: list[torch.Tensor] = []

    const = r.get("synthesis.b4.const", (None, 4, 4))
    channels = const.shape[0]
    head["input.input"] = _f32(const).unsqueeze(0)
    channels, noise = _synthesis_layer(
        r, "synthesis.b4.conv1", "conv1", c_in=channels, w_dim=w_dim, res=4, upsample=False, out=head
    )
    noises.append(noise)
    _torgb(r, "synthesis.b4.torgb", "to_rgb1", c_in=channels, w_dim=w_dim, upsample=False, out=head)
    _check_filter(r, "synthesis.b4.resample_filter")

    for j, res in enumerate(resolutions[1:]):
        block = f"synthesis.b{res}"
        if r.has(f"{block}.const"):
            raise BadCheckpoint(f"{WHAT}: {block} has a constant input; only b4 may")
        channels, noise = _synthesis_layer(
            r, f"{block}.conv0", f"convs.{2 * j}", c_in=channels, w_dim=w_dim, res=res, upsample=True, out=convs
        )
        noises.append(noise)
        channels, noise = _synthesis_layer(
            r, f"{block}.conv1", f"convs.{2 * j + 1}", c_in=channels, w_dim=w_dim, res=res, upsample=False, out=convs
        )
        noises.append(noise)
        _torgb(r, f"{block}.torgb", f"to_rgbs.{j}", c_in=channels, w_dim=w_dim, upsample=True, out=to_rgbs)
        _check_filter(r, f"{block}.resample_filter")

    leftover = sorted(str(k) for k in r.state if k not in r.used and not str(k).endswith(".resample_filter"))
    if leftover:
        more = f" and {len(leftover) - 3} more" if len(leftover) > 3 else ""
        raise BadCheckpoint(f"{WHAT} has tensors the rosinality layout cannot express: {', '.join(leftover[:3])}{more}")

    g_ema = {**style, **head, **convs, **to_rgbs}
    g_ema.update({f"noises.noise_{k}": n for k, n in enumerate(noises)})
    return Converted(
        g_ema=g_ema,
        latent_avg=latent_avg,
        resolution=resolutions[-1],
        n_mlp=n_mlp,
        w_dim=w_dim,
        n_latent=2 * len(resolutions),
    )


def load_ada(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read an exported ADA state dict; a code-carrying .pkl gets a hint on how to export it."""
    try:
        return read_checkpoint(path, WHAT)
    except BadCheckpoint as exc:
        if "Weights only load failed" in str(exc):  # torch's wording when the file pickles objects, not tensors
            raise BadCheckpoint(
                f"{WHAT} {path} holds pickled Python objects (a network pickle?), not just tensors; {_EXPORT_HINT}"
            ) from None
        if Path(path).is_file() and not zipfile.is_zipfile(path):
            raise BadCheckpoint(f"{exc}; {_EXPORT_HINT}") from None
        raise


def save_checkpoint(checkpoint: Mapping[str, Any], out: str | os.PathLike[str]) -> None:
    """``torch.save`` via a temporary file in the same directory, so a failure leaves no half-written file."""
    out = Path(out)
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise BadCheckpoint(f"cannot write {out}: directory {directory} does not exist")
    try:
        write_atomically(out, lambda fh: torch.save(dict(checkpoint), fh))
    except OSError as exc:
        raise BadCheckpoint(f"cannot write {out}: {exc.strerror or exc}") from None


def convert_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Converted:
    if Path(src).resolve() == Path(dst).resolve():
        raise BadCheckpoint("the output path is the input path; write the converted checkpoint elsewhere")
    converted = convert_state_dict(load_ada(src))
    save_checkpoint(converted.checkpoint(), dst)
    return converted


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cipher_worker.codecs.stylegan2.convert",
        description="Convert a StyleGAN2-ADA (PyTorch) G_ema state dict to a rosinality-format checkpoint "
        "({'g_ema', 'latent_avg'}) for VEIL_STYLEGAN2_CKPT.",
    )
    parser.add_argument("ada_state", type=Path, help="torch.save(G_ema.state_dict()) from an ADA checkout")
    parser.add_argument("out", type=Path, help="where to write the rosinality-format checkpoint")
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 on success, 2 (one line on stderr) on a bad or unconvertible input."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed by argparse
        return exc.code if isinstance(exc.code, int) else 2
    try:
        c = convert_file(args.ada_state, args.out)
    except VeilError as exc:
        print(f"veil: {exc}", file=sys.stderr)
        return exc.exit_code
    print(
        f"wrote {args.out}: {c.resolution}×{c.resolution} generator, {c.n_mlp} mapping layers, w_dim {c.w_dim}, "
        f"{c.n_latent} W+ layers (rosinality layout: g_ema + latent_avg)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
