"""FIT's training (ECCV 2020, §4.3, eq. 16), data-free and scaled down to the CPU: the face
identity transformer ``T`` (:mod:`cipher_worker.ciphers.fit_net`) on 64 px dcgan64 samples,
with a PatchGAN discriminator ``D`` and the password-predicting auxiliary network ``Q``.

Per face, as the paper's Fig. 3: two anonymizations ``A₁ = T(I, p₁)``, ``A₂ = T(I, p₂)``; the
recovery ``R = T(A₁, −p₁)`` and one wrong recovery ``WR = T(A₁, p′)`` (the paper's second
wrong recovery is left out: one step of CPU time; ``A₁``/``A₂`` carry the diversity term). ``A₁``
is rounded to uint8 (straight through) before it is recovered, because the envelope stores it
so. The losses, the paper's weights where it gives them:

* **feature dissimilarity** ``L_feat`` (λ 2): max(0, cos) of identity features between
  (A₁, A₂) and (A₁, WR), the paper's pairs;
* **identity change** in place of the face-classification adversarial loss ``L_adv`` (λ 2; it
  needs identity labels, which generated faces do not have): max(0, cos) of A₁ and WR to I;
* **recovery** ``L_rec`` L1 of R to I (λ 100) and, for ``L_rec_cls`` (λ 1), 1 − cos of R's
  identity features to I's;
* **background** ``L_L1`` (λ 10): L1 of A₁ and WR to I *outside* the template's face ellipse
  (the paper takes the whole image; on 64 px crops that held the face itself in place);
* **auxiliary** ``L_aux`` (λ 1): Q(I, A₁) predicts p₁'s N/4 four-bit chunks, cross entropy
  (InfoGAN-style, Q trained with T);
* **photo-realism** ``L_GAN`` (λ 1): LSGAN on a PatchGAN, real = fresh generator samples,
  fake = A₁ and WR (one scale; the paper's second scale and image buffer are left out).

Identity features: phase A uses a stand-in that costs little, the dcgan64 encoder's identity
coordinates of the image, measured through noise (so the transformer cannot fool it with an
invisible perturbation); their "must differ" terms also come as latent distances
(:func:`~lab.train.cipher_kit.hinge_near`), whose gradient does not vanish at the identity map
where T starts. Phase B adds SFace's features (:mod:`lab.train.sface`) to the same terms.
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

from cipher_worker.ciphers.fit_net import FaceIdentityTransformer, TransformerSpec, inverse_password
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
    hinge_near,
    id_kept,
    load_judge,
    save_weights,
    show_losses,
)

CLIP = 5.0  # gradient norm clipped for T and Q: one adversarial step must not throw the crops away
NOISE = 0.04  # std of the noise the stand-in judge looks through, in [−1, 1] units


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
        # the paper's λ_feat = λ_adv = 2 left the faces where they were in a CPU-sized run: ×2.5 on
        # the cosines, ×5 on their latent-distance form
        "feat": 5.0,
        "far_feat": 10.0,
        "deid": 5.0,
        "far_deid": 10.0,
        "rec": 100.0,
        "rec_id": 1.0,
        "background": 10.0,
        "aux": 1.0,
        "gan": 2.0,  # the paper's 1 let a pattern through
        "sface_feat": 2.0,
        "sface_deid": 2.0,
        "sface_rec_id": 1.0,
    }
    ramped = ("rec", "gan")  # T moves away first; recovery and realism then pull it into shape
    defaults: ClassVar[dict[str, int | float]] = {
        "latent_steps": 1200,
        "latent_batch": 8,
        "sface_steps": 40,
        "sface_batch": 4,
        "lr": 1e-3,
        "finetune_lr": 1e-4,
        "eval_samples": 96,
        "ramp": 0.2,
    }

    def __init__(self, spec: TransformerSpec, split: Split, codec: DCGAN64Codec) -> None:
        self.net = FaceIdentityTransformer(spec)
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

    def passes(self, x: Tensor, gen: torch.Generator) -> dict[str, Tensor]:
        bits = self.spec.bits
        p1, p2 = random_passwords(len(x), bits, gen), random_passwords(len(x), bits, gen)
        a1, a2 = self.net(x, p1), self.net(x, p2)
        stored = to_stored(a1)
        wrong = other_passwords(inverse_password(p1), gen)
        return {
            "p1": p1,
            "a1": a1,
            "a2": a2,
            "recovered": self.net(stored, inverse_password(p1)),
            "wrong": self.net(stored, wrong),
        }

    def losses(self, x: Tensor, gen: torch.Generator, judge: IdentityJudge | None = None) -> Losses:
        out = self.passes(x, gen)
        a1, a2, rec, wrong = out["a1"], out["a2"], out["recovered"], out["wrong"]
        # identities are judged as the pipeline shows them: the transformed face inside the template's
        # face, the original crop around it (so changing the background does not count)
        shown = {"a1": self.shown(a1, x), "a2": self.shown(a2, x), "rec": rec, "wrong": self.shown(wrong, x)}
        f = {k: self.stand_in(v, gen) for k, v in (("x", x), *shown.items())}
        fake = self.discriminator(torch.cat([a1, wrong]))
        logits = self.predictor(x, a1)
        losses: Losses = {
            "feat": (hinge_cos(f["a1"], f["a2"]) + hinge_cos(f["a1"], f["wrong"])) / 2,
            "far_feat": (hinge_near(f["a1"], f["a2"]) + hinge_near(f["a1"], f["wrong"])) / 2,
            "deid": (hinge_cos(f["a1"], f["x"]) + hinge_cos(f["wrong"], f["x"])) / 2,
            "far_deid": (hinge_near(f["a1"], f["x"]) + hinge_near(f["wrong"], f["x"])) / 2,
            "rec": (rec - x).abs().mean(),
            "rec_id": id_kept(f["rec"], f["x"]),
            "background": ((torch.cat([a1, wrong]) - x.repeat(2, 1, 1, 1)).abs() * self.outside).mean(),
            "aux": F.cross_entropy(logits.reshape(-1, 16), chunk_labels(out["p1"]).reshape(-1)),
            "gan": (fake - 1).pow(2).mean(),
        }
        if judge is not None:
            e = {k: judge(v) for k, v in shown.items()}
            with torch.no_grad():
                e["x"] = judge(x)
            losses["sface_feat"] = (hinge_cos(e["a1"], e["a2"]) + hinge_cos(e["a1"], e["wrong"])) / 2
            losses["sface_deid"] = (hinge_cos(e["a1"], e["x"]) + hinge_cos(e["wrong"], e["x"])) / 2
            losses["sface_rec_id"] = id_kept(e["rec"], e["x"])
        self._fakes = torch.cat([a1, wrong]).detach()
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
    objective = FITObjective(TransformerSpec(), split, codec)
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
        losses = objective.losses(objective.samples(config.latent_batch, gen), gen)
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
            losses = objective.losses(objective.samples(config.sface_batch, gen), gen, judge)
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

    with torch.no_grad():
        for rows in torch.arange(n).split(32):
            x = to_stored(objective.samples(len(rows), gen))
            p1, p2 = random_passwords(len(x), bits, gen), random_passwords(len(x), bits, gen)
            a1, a2 = to_stored(net(x, p1)), to_stored(net(x, p2))
            right = to_stored(net(a1, inverse_password(p1)))
            wrong = to_stored(net(a1, other_passwords(inverse_password(p1), gen)))

            def show(t: Tensor, x: Tensor = x) -> Tensor:
                return objective.shown(t, x)

            error = (right - x).abs() * 127.5
            add("round_trip_mean_abs", error.mean((1, 2, 3)))
            add("round_trip_max_abs", error.amax((1, 2, 3)))
            add("round_trip_psnr", 10 * torch.log10(4 / (right - x).pow(2).mean((1, 2, 3))))
            add("stranger_mean_abs", (a1 - x).abs().mean((1, 2, 3)) * 127.5)
            add("aux_accuracy", (objective.predictor(x, a1).argmax(2) == chunk_labels(p1)).float().mean(1))
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
