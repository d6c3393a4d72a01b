"""FIT's training (ECCV 2020, §4.3–4.4), data-free and scaled down to the CPU: the guided face
identity transformer ``T`` (:mod:`cipher_worker.ciphers.fit_net`, ``guided=True``, 32-bit
passwords) on 64 px dcgan64 samples, with a PatchGAN discriminator ``D`` and the
password-predicting auxiliary network ``Q``.

What the first weights taught (the plain transformer, trained on the paper's losses with
differentiable judges): T kept the original face and fooled its judges with colour bands (SFace
and dlib re-identified every stranger, 5–8/255 from the original). Holding T to the codec's
stranger of the face (a dead-zone L1 to it, λ 200) fixed the faces, but the recovery term could
then only be met by hiding the original in the stranger, which half an hour of CPU did not teach:
the recovery error stayed at the guide's ≈ 13/255 for 900 steps. So the guided transformer draws
the face from the crop's surroundings only (the codec's stranger of them, which T refines), and
recovery is its explicit layer (:meth:`~cipher_worker.ciphers.fit_net.FaceIdentityTransformer.transform_stored`),
not learned. What is trained is the refinement, per face and two passwords ``p₁``, ``p₂``
(canonical: what ``p`` and ``−p`` share), ``A_k = T(I, p_k)`` before the recovery layer:

* **guide** (added, λ 20): mean of max(0, |A_k − S_k| − 8 grey levels) to the codec's stranger ``S_k``
  the refinement starts from: T may retouch the stranger, never repaint it;
* **feature dissimilarity** ``L_feat`` (λ 2): max(0, cos) of identity features of (A₁, A₂);
* **identity change** in place of the face-classification adversarial loss ``L_adv`` (λ 2; it
  needs identity labels, which generated faces do not have): max(0, cos) of A₁ and A₂ to I;
* **auxiliary** ``L_aux`` (λ 1): Q(I, A₁) predicts p₁'s N/4 four-bit chunks, cross entropy
  (InfoGAN-style, Q trained with T);
* **photo-realism** ``L_GAN`` (λ 1, rising over the first fifth): LSGAN on a PatchGAN, real =
  fresh generator samples, fake = A₁ and A₂ (one scale; the paper's second scale and image
  buffer are left out).

The paper's recovery terms ``L_rec`` and ``L_rec_cls`` and the background term ``L_L1`` hold by
construction (the surroundings are kept bit for bit; the recovery layer brings the face back to
within a few grey levels) and are measured, not trained: :func:`evaluate_fit` runs the cipher's
own uint8 path. The wrong recoveries ``WR`` need no term either: another password draws
another cover, so T anonymizes the stored crop again. Half of each batch is taken off the
generator's manifold (:func:`off_manifold`: alignment jitter, other surroundings, colour,
sharpening), as a photo's crop is. Identity features: the stand-in that costs little, the
dcgan64 encoder's identity coordinates of the image through noise; an SFace phase is available
(``--sface-steps``) and off by default (the cover never sees the face, so SFace has nothing to
push it from, and dlib, which training never sees, judges the result).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cipher_worker.ciphers.fit_net import (
    CodecGuide,
    FaceIdentityTransformer,
    TransformerSpec,
    canonical_password,
    inverse_password,
)
from cipher_worker.codecs.dcgan64 import DCGAN64Codec
from cipher_worker.codecs.dcgan64_net import Z_DIM
from cipher_worker.facemask import crop_weights, template_face

from .cipher_kit import (
    SAME_PERSON,
    CipherTrainConfig,
    IdentityJudge,
    Losses,
    Split,
    hinge_cos,
    load_judge,
    save_weights,
    show_losses,
)

CLIP = 5.0  # gradient norm clipped for T and Q: one adversarial step must not throw the crops away
NOISE = 0.04  # std of the noise the stand-in judge looks through, in [−1, 1] units
# the password's bits: the recovery layer tells the right password's cover from any other, so
# the password space is all that stands against trying every one (2^14 canonical classes of a
# 16-bit password take a minute; 2^30 take a CPU some hundred days)
GUIDED_BITS = 32
TOLERANCE = 8 / 127.5  # how far the network may take the codec's stranger unpunished, per value


def off_by(images: Tensor, start: Tensor) -> Tensor:
    """Mean of max(0, |images − start| − TOLERANCE): free within a few grey levels of the start
    (room for what recovery needs, too faint to see), linear beyond."""
    return ((images - start).abs() - TOLERANCE).clamp(min=0).mean()


def off_manifold(x: Tensor, others: Tensor, face: Tensor, gen: torch.Generator) -> Tensor:
    """Generator samples made more like photos' aligned crops, which the codec reconstructs far
    worse than its own samples: a small random similarity transform (alignment jitter), another
    sample's surroundings around the face, per-channel gain and offset, and sharpening."""
    n = len(x)

    def uniform(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand((n, *shape), generator=gen)

    angle, scale, shift = uniform(-0.12, 0.12), uniform(0.92, 1.08), uniform(-0.06, 0.06, 2)
    theta = torch.stack(
        [
            torch.stack([scale * angle.cos(), -scale * angle.sin(), shift[:, 0]], 1),
            torch.stack([scale * angle.sin(), scale * angle.cos(), shift[:, 1]], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mixed = torch.rand(n, 1, 1, 1, generator=gen) < 0.5
    x = torch.where(mixed, x * face + others * (1 - face), x)
    x = x * uniform(0.8, 1.2, 3, 1, 1) + uniform(-0.12, 0.12, 3, 1, 1)
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    x = x + uniform(0.0, 1.5, 1, 1, 1) * (x - blurred)
    return x.clamp(-1, 1)


def random_passwords(n: int, bits: int, gen: torch.Generator) -> Tensor:
    """(n, bits) random odd passwords (the cipher's: none is its own inverse), 0/1 floats."""
    p = torch.randint(0, 2, (n, bits), generator=gen).float()
    p[:, 0] = 1
    return p


def other_passwords(p: Tensor, gen: torch.Generator) -> Tensor:
    """Random odd passwords, each different from the row of ``p``."""
    q = random_passwords(len(p), p.shape[1], gen)
    same = (q == p).all(1)
    q[same, -1] = 1 - q[same, -1]
    return q


def to_stored(images: Tensor) -> Tensor:
    """The uint8 rounding the envelope applies, straight through (its gradient is the identity's)."""
    stored = ((images.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1
    return images + (stored - images).detach()


def _block(inputs: int, outputs: int, norm: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(inputs, outputs, 4, 2, 1)]
    if norm:
        layers.append(nn.InstanceNorm2d(outputs, affine=True))
    layers.append(nn.LeakyReLU(0.2, True))
    return layers


class PatchDiscriminator(nn.Module):
    """(N, C, 64, 64) → (N, 1, 7, 7) realism scores of overlapping patches (PatchGAN)."""

    def __init__(self, inputs: int = 3, width: int = 32) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            *_block(inputs, width, False), *_block(width, 2 * width), *_block(2 * width, 4 * width)
        )
        self.head = nn.Conv2d(4 * width, 1, 3, 1, 0)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.trunk(images))


class PasswordPredictor(nn.Module):
    """The paper's Q: the PatchGAN trunk on (I, T_p I), average pooled, N/4 heads of 16 logits."""

    def __init__(self, bits: int, width: int = 32) -> None:
        super().__init__()
        self.trunk = PatchDiscriminator(6, width).trunk
        self.heads = nn.Linear(4 * width, 16 * (bits // 4))

    def forward(self, original: Tensor, transformed: Tensor) -> Tensor:
        h = self.trunk(torch.cat([original, transformed], 1)).mean((2, 3))
        return self.heads(h).view(len(h), -1, 16)


def chunk_labels(bits: Tensor) -> Tensor:
    """(N, B) bits → (N, B/4) the value 0–15 of each four-bit chunk, Q's classes."""
    chunks = bits[:, : 4 * (bits.shape[1] // 4)].view(len(bits), -1, 4)
    return (chunks * torch.tensor([1.0, 2.0, 4.0, 8.0])).sum(2).long()


class StandInJudge(nn.Module):
    """Identity features that cost little: the dcgan64 encoder's identity coordinates of a crop."""

    def __init__(self, encoder: nn.Module, split: Split) -> None:
        super().__init__()
        self.encoder, self.split = encoder, split

    def forward(self, images: Tensor, gen: torch.Generator | None = None) -> Tensor:
        # at half resolution: a pixel-level pattern (the first run drew a checkerboard) earns nothing
        images = F.interpolate(F.avg_pool2d(images, 2), scale_factor=2, mode="bilinear", align_corners=False)
        if gen is not None:
            images = images + NOISE * torch.randn(images.shape, generator=gen)
        return self.split.parts(self.encoder(images))[1]


class FITObjective:
    """T, D and Q; the losses of one batch; the discriminator's own step."""

    name = "fit"
    weights: ClassVar[dict[str, float]] = {
        "guide": 20.0,
        "feat": 2.0,
        "deid": 2.0,
        "aux": 1.0,
        "gan": 1.0,
        "sface_feat": 2.0,
        "sface_deid": 2.0,
    }
    ramped = ("gan",)
    defaults: ClassVar[dict[str, int | float]] = {
        "latent_steps": 1200,
        "latent_batch": 8,
        "sface_steps": 0,
        "sface_batch": 4,
        "lr": 5e-4,
        "finetune_lr": 1e-4,
        "eval_samples": 96,
        "ramp": 0.2,
    }

    def __init__(self, spec: TransformerSpec, split: Split, codec: DCGAN64Codec) -> None:
        self.net = FaceIdentityTransformer(spec, CodecGuide(codec.encoder, codec.generator))
        self.spec = spec
        self.split = split
        self.generator = codec.generator
        self.stand_in = StandInJudge(codec.encoder, split)
        self.discriminator = PatchDiscriminator()
        self.predictor = PasswordPredictor(spec.bits)
        face = crop_weights(template_face(split.template), spec.size)
        self.outside = torch.from_numpy(1 - face).float()[None, None]  # (1, 1, S, S)

    def samples(self, n: int, gen: torch.Generator) -> Tensor:
        with torch.no_grad():
            return self.generator(torch.randn(n, Z_DIM, generator=gen))

    def photos(self, n: int, gen: torch.Generator) -> Tensor:
        """Generator samples, half of them taken off the generator's manifold as a photo's crop is
        (:func:`off_manifold`), so that T sees surroundings like a photo's."""
        x = self.samples(n, gen)
        half = n // 2
        return torch.cat([x[:half], off_manifold(x[half:], self.samples(n - half, gen), 1 - self.outside, gen)])

    def losses(self, x: Tensor, gen: torch.Generator, judge: IdentityJudge | None = None) -> Losses:
        bits = self.spec.bits
        p1, p2 = random_passwords(len(x), bits, gen), random_passwords(len(x), bits, gen)
        base1, a1 = self.net.cover_parts(x, p1)
        base2, a2 = self.net.cover_parts(x, p2)
        shown = {"a1": self.shown(a1, x), "a2": self.shown(a2, x)}
        f = {k: self.stand_in(v, gen) for k, v in (("x", x), *shown.items())}
        fake = self.discriminator(torch.cat([a1, a2]))
        logits = self.predictor(x, a1)
        losses: Losses = {
            "guide": (off_by(a1, base1) + off_by(a2, base2)) / 2,
            "feat": hinge_cos(f["a1"], f["a2"]),
            "deid": (hinge_cos(f["a1"], f["x"]) + hinge_cos(f["a2"], f["x"])) / 2,
            "aux": F.cross_entropy(logits.reshape(-1, 16), chunk_labels(canonical_password(p1)).reshape(-1)),
            "gan": (fake - 1).pow(2).mean(),
        }
        if judge is not None:
            e = {k: judge(v) for k, v in shown.items()}
            with torch.no_grad():
                e["x"] = judge(x)
            losses["sface_feat"] = hinge_cos(e["a1"], e["a2"])
            losses["sface_deid"] = (hinge_cos(e["a1"], e["x"]) + hinge_cos(e["a2"], e["x"])) / 2
        self._fakes = torch.cat([a1, a2]).detach()
        return losses

    def shown(self, transformed: Tensor, original: Tensor) -> Tensor:
        """The transformed crop inside the template's face ellipse over the original crop, its
        colours first matched to the original's inside the ellipse (per channel mean and spread),
        as the pipeline's compositor matches them: a tint changes no identity (the first run
        bought its identity change with magenta and green faces)."""
        inside = 1 - self.outside
        area = inside.sum()

        def moments(t: Tensor) -> tuple[Tensor, Tensor]:
            mean = (t * inside).sum((2, 3), keepdim=True) / area
            spread = (((t - mean) ** 2 * inside).sum((2, 3), keepdim=True) / area + 1e-6).sqrt()
            return mean, spread

        (mt, st), (mo, so) = moments(transformed), moments(original)
        matched = (transformed - mt) / st * so + mo
        return original + (matched - original) * inside

    def discriminator_loss(self, real: Tensor) -> Tensor:
        """LSGAN: real generator samples to 1, the last batch's transformed faces to 0."""
        return ((self.discriminator(real) - 1).pow(2).mean() + self.discriminator(self._fakes).pow(2).mean()) / 2


def train_fit(out: Path, config: CipherTrainConfig, log: Callable[[str], None]) -> dict[str, float]:
    """Train T (with D and Q), evaluate on held-out faces, write ``out``; the metrics."""
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    split = Split()
    codec = DCGAN64Codec(foresight=False)
    objective = FITObjective(TransformerSpec(bits=GUIDED_BITS, guided=True), split, codec)
    net, weights = objective.net, config.weights
    started = time.perf_counter()
    t_params = [*net.parameters(), *objective.predictor.parameters()]
    opt = torch.optim.Adam(t_params, lr=config.lr, betas=(0.5, 0.99))
    opt_d = torch.optim.Adam(objective.discriminator.parameters(), lr=config.lr, betas=(0.5, 0.99))
    metrics: dict[str, float] = {}

    def step(losses: Losses, rise: float, optimizer: torch.optim.Optimizer) -> None:
        total = sum(v * weights.get(k, 1.0) * (rise if k in objective.ramped else 1.0) for k, v in losses.items())
        optimizer.zero_grad(set_to_none=True)
        total.backward()  # type: ignore[union-attr]
        nn.utils.clip_grad_norm_(t_params, CLIP)
        optimizer.step()
        opt_d.zero_grad(set_to_none=True)
        objective.discriminator_loss(objective.samples(len(objective._fakes), gen)).backward()
        opt_d.step()

    total_steps = config.latent_steps
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(1, total_steps), pct_start=0.05)
    for i in range(total_steps):
        losses = objective.losses(objective.photos(config.latent_batch, gen), gen)
        step(losses, min(1.0, 0.05 + i / max(1.0, config.ramp * total_steps)), opt)
        sched.step()
        if i % 100 == 0 or i == total_steps - 1:
            log(f"stand-in {i}/{total_steps} " + show_losses(losses) + f" ({time.perf_counter() - started:.0f}s)")
    if total_steps:
        metrics.update({f"latent_{k}": float(v.detach()) for k, v in losses.items()})

    judge = load_judge(split, log)
    identity_loss = "stand-in"
    if judge is not None and config.sface_steps:
        identity_loss = "sface"
        opt = torch.optim.Adam(t_params, lr=config.finetune_lr, betas=(0.5, 0.99))
        for i in range(config.sface_steps):
            losses = objective.losses(objective.photos(config.sface_batch, gen), gen, judge)
            step(losses, 1.0, opt)
            if i % 10 == 0 or i == config.sface_steps - 1:
                took = f" ({time.perf_counter() - started:.0f}s)"
                log(f"sface {i}/{config.sface_steps} " + show_losses(losses) + took)
        metrics.update({f"sface_{k}": float(v.detach()) for k, v in losses.items()})

    net.eval()
    metrics.update(evaluate_fit(objective, judge, config.seed, config.eval_samples))
    metrics["seconds"] = time.perf_counter() - started
    save_weights(out, objective.spec.to_dict(), net, identity_loss, config, metrics, log)
    return metrics


def evaluate_fit(objective: FITObjective, judge: IdentityJudge | None, seed: int, n: int) -> dict[str, float]:
    """On held-out generator faces and passwords, through uint8 crops as the cipher runs: the
    right-password recovery's pixel error (0–255 units) and PSNR; the stand-in's and (with the
    judge) SFace's cosines to the original of the stranger, the other password's stranger, the
    wrong-password recovery (also to the stranger) and the right-password recovery (strangers
    judged inside the face over the original crop, as shown); Q's accuracy per four-bit chunk."""
    gen = torch.Generator().manual_seed(seed + 1)
    net = copy.deepcopy(objective.net).eval()
    bits = objective.spec.bits
    parts: dict[str, list[Tensor]] = {}

    def add(name: str, value: Tensor) -> None:
        parts.setdefault(name, []).append(value.detach().float().reshape(-1))

    def levels(t: Tensor) -> Tensor:
        return ((t.clamp(-1, 1) + 1) * 127.5).round()

    def run(t: Tensor, p: Tensor) -> Tensor:
        return net.transform_stored(levels(t), p) / 127.5 - 1

    with torch.no_grad():
        for rows in torch.arange(n).split(32):
            x = to_stored(objective.samples(len(rows), gen))
            p1, p2 = random_passwords(len(x), bits, gen), random_passwords(len(x), bits, gen)
            a1, a2 = run(x, p1), run(x, p2)
            right = run(a1, inverse_password(p1))
            wrong = run(a1, other_passwords(inverse_password(p1), gen))

            def show(t: Tensor, x: Tensor = x) -> Tensor:
                return objective.shown(t, x)

            error = (right - x).abs() * 127.5
            add("round_trip_mean_abs", error.mean((1, 2, 3)))
            add("round_trip_max_abs", error.amax((1, 2, 3)))
            add("round_trip_psnr", 10 * torch.log10(4 / (right - x).pow(2).mean((1, 2, 3))))
            add("stranger_mean_abs", (a1 - x).abs().mean((1, 2, 3)) * 127.5)
            hits = objective.predictor(x, a1).argmax(2) == chunk_labels(canonical_password(p1))
            add("aux_accuracy", hits.float().mean(1))
            judges: list[tuple[str, Callable[[Tensor], Tensor]]] = [("stand_in", objective.stand_in)]
            if judge is not None:
                judges.append(("sface", judge))
            for name, features in judges:
                seen = {"x": x, "a1": show(a1), "a2": show(a2), "right": right, "wrong": show(wrong)}
                e = {k: features(v) for k, v in seen.items()}
                pairs = {
                    "stranger": ("a1", "x"),
                    "other_key": ("a1", "a2"),
                    "wrong_key": ("wrong", "x"),
                    "wrong_vs_stranger": ("wrong", "a1"),
                    "right_key": ("right", "x"),
                }
                for label, (a, b) in pairs.items():
                    cos = F.cosine_similarity(e[a], e[b], dim=1)
                    add(f"{name}_cos_{label}", cos)
                    if name == "sface":
                        add(f"sface_same_person_{label}", (cos >= SAME_PERSON).float())
    out = {k: float(torch.cat(v).mean()) for k, v in parts.items()}
    out["round_trip_max_abs"] = float(torch.cat(parts["round_trip_max_abs"]).max())
    return out
