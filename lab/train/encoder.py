"""Data-free training of the dcgan64 encoder.

No face photos are needed: we sample z ~ N(0, I), render G(z) and teach the encoder to
give z back. Two phases: (1) regress z on a cached set of renders (cheap, the generator
runs once per sample); (2) fine-tune through the frozen generator so that G(E(G(z)))
matches G(z) in pixels, which is what recovery quality depends on. Light augmentations
(sub-pixel shifts, blur, noise, contrast) stand in for what real aligned crops look like.

Deterministic for a given seed, torch version and thread count.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from cipher_worker.codecs.dcgan64_net import Z_DIM, DCGANEncoder, DCGANGenerator, load_generator


@dataclass(frozen=True)
class EncoderTrainConfig:
    seed: int = 0
    cached_samples: int = 40_000
    regress_steps: int = 5_000
    finetune_steps: int = 1_200
    batch: int = 64
    lr: float = 1e-3
    pixel_weight: float = 4.0


def _render(generator: DCGANGenerator, z: Tensor) -> Tensor:
    with torch.no_grad():
        return generator(z)


def augment(images: Tensor, gen: torch.Generator) -> Tensor:
    """Nuisances of real aligned crops: (N, 3, 64, 64) in [-1, 1] → same shape."""
    n = images.shape[0]
    # sub-pixel shift and tiny scale/rotation, as alignment error on real landmarks
    angle = (torch.rand(n, generator=gen) - 0.5) * math.radians(6)
    scale = 1 + (torch.rand(n, generator=gen) - 0.5) * 0.06
    shift = (torch.rand(n, 2, generator=gen) - 0.5) * (3 / 32)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    # blur some, add sensor noise to some, vary contrast a little
    blur = torch.rand(n, 1, 1, 1, generator=gen) < 0.3
    k = torch.tensor([1.0, 2.0, 1.0])
    k = (k[:, None] * k[None, :] / 16).expand(3, 1, 3, 3)
    out = torch.where(blur, F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), k, groups=3), out)
    out = out + torch.randn(out.shape, generator=gen) * (torch.rand(n, 1, 1, 1, generator=gen) * 0.04)
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.2
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * contrast + mean).clamp(-1, 1)


def train_encoder(out: Path, config: EncoderTrainConfig = EncoderTrainConfig(), log=print) -> dict[str, float]:
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    generator = load_generator()
    encoder = DCGANEncoder()

    started = time.perf_counter()
    z_all = torch.randn(config.cached_samples, Z_DIM, generator=gen)
    images = torch.cat([_render(generator, z) for z in z_all.split(500)])
    log(f"rendered {len(images)} samples in {time.perf_counter() - started:.0f}s")

    opt = torch.optim.Adam(encoder.parameters(), lr=config.lr, betas=(0.9, 0.99))
    total = config.regress_steps + config.finetune_steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total, pct_start=0.05)
    metrics: dict[str, float] = {}
    for step in range(total):
        finetune = step >= config.regress_steps
        if finetune:
            z = torch.randn(config.batch, Z_DIM, generator=gen)
            target = _render(generator, z)
        else:
            idx = torch.randint(0, len(images), (config.batch,), generator=gen)
            z, target = z_all[idx], images[idx]
        z_hat = encoder(augment(target, gen))
        loss_z = F.mse_loss(z_hat, z)
        loss = loss_z
        if finetune:
            loss_px = F.mse_loss(generator(z_hat), target)
            loss = loss_z + config.pixel_weight * loss_px
            metrics["pixel_mse"] = float(loss_px)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        metrics["z_mse"] = float(loss_z)
        if step % 250 == 0 or step == total - 1:
            shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            log(f"step {step}/{total} {shown} ({time.perf_counter() - started:.0f}s)")

    metrics.update(evaluate_encoder(encoder.eval(), generator, seed=config.seed + 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    # fp16 keeps the committed file small; the encoder runs in fp32
    state = {k: v.half() for k, v in encoder.state_dict().items()}
    torch.save({"encoder": state, "config": config.__dict__, "metrics": metrics}, out)
    log(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB): {metrics}")
    return metrics


def evaluate_encoder(encoder: DCGANEncoder, generator: DCGANGenerator, seed: int, n: int = 512) -> dict[str, float]:
    """Held-out z error and re-render PSNR on fresh generator samples."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = torch.randn(n, Z_DIM, generator=gen)
        images = generator(z)
        z_hat = encoder(images)
        rerender = generator(z_hat)
    mse = F.mse_loss((rerender + 1) / 2, (images + 1) / 2).item()
    cos = F.cosine_similarity(z_hat, z).mean().item()
    return {"eval_z_cosine": cos, "eval_rerender_psnr": 10 * math.log10(1 / mse)}
