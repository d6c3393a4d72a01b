"""StyleGAN2's layers in plain PyTorch, with the parameter names of rosinality's checkpoints.

The research code compiles CUDA kernels for upfirdn2d and the fused bias + leaky ReLU; here
both are ordinary tensor ops that run anywhere. Modulated convolutions modulate the input
activations and demodulate the outputs instead of building one weight per sample (a
grouped convolution): the same arithmetic, but every sample of a batch shares one
convolution weight, which is what CPU convolution libraries are fast at.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

BLUR_TAPS = (1, 3, 3, 1)  # the binomial low-pass filter of every StyleGAN2
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2)  # keeps activations at unit variance through the leaky ReLU


def make_kernel(taps: Sequence[float], gain: float = 1.0) -> torch.Tensor:
    """The separable 2-D filter ``taps ⊗ taps``, normalised to sum to ``gain``."""
    k = torch.tensor(taps, dtype=torch.float32)
    kernel = k[None, :] * k[:, None]
    return kernel / kernel.sum() * gain


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter (true convolution) and downsample each channel.

    ``pad`` = (before, after), the same on both axes; negative values crop."""
    n, c, h, w = x.shape
    if up > 1:  # zero insertion: each pixel followed by up − 1 zeros along both axes
        x = F.pad(x.reshape(n, c, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1)).reshape(n, c, h * up, w * up)
    p0, p1 = pad
    weight = kernel.flip(0, 1).to(x.dtype).expand(c, 1, *kernel.shape)  # conv2d correlates; flip to convolve
    if p0 == p1 >= 0:  # the convolution pads by itself, without another pass over the activations
        x = F.conv2d(x, weight, padding=p0, groups=c)
    else:
        x = F.pad(x, (max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)))
        if p0 < 0 or p1 < 0:
            x = x[..., max(-p0, 0) : x.shape[-2] - max(-p1, 0), max(-p0, 0) : x.shape[-1] - max(-p1, 0)]
        x = F.conv2d(x, weight, groups=c)
    return x[..., ::down, ::down] if down > 1 else x


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-channel bias, leaky ReLU, and StyleGAN's √2 gain (dim 1 is the channel)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape), LRELU_SLOPE) * LRELU_GAIN


class PixelNorm(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """A linear layer with equalized learning rate: weights are stored N(0, 1)/lr_mul and
    scaled by lr_mul/√fan_in at run time; the bias is stored /lr_mul."""

    def __init__(
        self, in_dim: int, out_dim: int, *, lr_mul: float = 1.0, bias_init: float = 0.0, activate: bool = False
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activate:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)


class Blur(nn.Module):
    kernel: torch.Tensor

    def __init__(self, pad: tuple[int, int], gain: float = 1.0):
        super().__init__()
        self.register_buffer("kernel", make_kernel(BLUR_TAPS, gain))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """×2 upsampling with the blur filter (gain 4 restores the energy of the inserted zeros)."""

    kernel: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("kernel", make_kernel(BLUR_TAPS, gain=4.0))
        p = len(BLUR_TAPS) - 2
        self.pad = ((p + 1) // 2 + 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=2, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Convolution whose input channels are scaled by a style, optionally demodulated
    (each output channel renormalised to unit expected variance) and ×2 upsampling."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int,
        style_dim: int,
        *,
        demodulate: bool = True,
        upsample: bool = False,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.demodulate = demodulate
        self.upsample = upsample
        self.padding = kernel_size // 2
        if upsample:
            # a stride-2 transposed convolution, then the blur; pads keep the output at 2× the input
            p = (len(BLUR_TAPS) - 2) - (kernel_size - 1)
            self.blur = Blur(pad=((p + 1) // 2 + 1, p // 2 + 1), gain=4.0)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        out, demod = self.convolve(x, style)
        return out if demod is None else out * demod

    def convolve(self, x: torch.Tensor, style: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The modulated convolution before demodulation, and the (N, out, 1, 1) demodulation
        factors (None without demodulation), so a caller can fold them into its next pass."""
        weight = self.weight[0] * self.scale  # (out, in, k, k)
        s = self.modulation(style)  # (N, in)
        x = x * s[:, :, None, None]
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if not self.demodulate:
            return out, None
        # ‖w ⊙ s‖ per (sample, output channel) = sqrt(s² · Σ_k w²)
        demod = torch.rsqrt(s.square() @ weight.square().sum((2, 3)).T + 1e-8)
        return out, demod[:, :, None, None]


class NoiseInjection(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias)


class StyledConv(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, style_dim: int, *, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """activate(noise(conv(x))) in two passes over the activations instead of five: the
        demodulation, noise, bias and gain meet in one multiply-add (the leaky ReLU commutes
        with the positive gain), then an in-place leaky ReLU."""
        out, demod = self.conv.convolve(x, style)
        assert demod is not None
        offset = (noise * self.noise.weight + self.activate.bias.view(1, -1, 1, 1)) * LRELU_GAIN  # (1, C, H, W)
        # in place on the convolution's fresh output, which keeps its memory layout
        return F.leaky_relu_(torch.addcmul(offset, out, demod * LRELU_GAIN, out=out), LRELU_SLOPE)


class ToRGB(nn.Module):
    """1×1 modulated (not demodulated) projection to RGB, added to the upsampled skip image."""

    def __init__(self, in_ch: int, style_dim: int, *, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)
