"""Data-free training of a learned cipher on the dcgan64 codec (``python -m lab.train cipher
--name ifadit``; ``make train-cipher NAME=ifadit``).

No photos: faces are the generator's own samples, z ~ N(0, I), split into attribute and
identity coordinates by the codec's basis. iFADIT's phase II losses (§3.5.2 of the paper),
scaled down; phase I (disentangle and reconstruct) is the codec itself, already trained:

* **anonymity** ``max(0, cos(E(G(x′)), E(G(x))))``: the stranger is not the original;
* **diversity** between the strangers of one face under two keys, and of two faces under one
  key;
* **de-anonymization** with a wrong key ``max(0, cos(E(G(T⁻¹(x′, k₂))), E(G(x))))``; with the
  right key it is exact by construction, so that term of the paper is zero here;
* **prior** (what keeps the stranger natural, in place of the paper's LPIPS and face-parser
  image terms, which have no offline weights): KL(T_k#N(0, I) ‖ N(0, I)), exact for a flow:
  E[½|x′|² − ½|x|² − log|det J|] / d. It is zero when every key's map keeps the generator's
  prior, so strangers are as typical as the generator's own faces. The paper applies its image
  terms to falsely recovered faces too; the same KL can hold the wrong-key recovery
  T⁻¹(T(x, k₁), k₂) to the prior (its log-det: k₁'s forward minus k₂'s at the result;
  ``wrong_prior_weight``, off for the committed weights: it trades a wrong key's distance from
  the original for natural decoys, docs/cipher.md);
* a pixel L1 at the paper's weight for anonymized images (0.01), which keeps the outline;
* and, because a cosine's gradient vanishes where two vectors agree (an untrained flow gives
  every key the same stranger), the latent distances of the two key terms, hinged at what
  separates two independent prior samples (:func:`_hinge_near`).

E is SFace (``lab.train.sface``) on the renders warped to its 112 px alignment. Phase A
trains with latent stand-ins for E (cosines of the identity coordinates themselves), which
costs microseconds a step; phase B fine-tunes through the generator and SFace. If SFace
cannot be converted (onnx or onnx2torch missing) or does not match OpenCV's, phase B is
skipped and the file records ``identity_loss: latent``.

Deterministic for a given seed, torch version and thread count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cipher_worker.ciphers import weights_path
from cipher_worker.ciphers.base import state_fingerprint
from cipher_worker.ciphers.ifadit_net import KEY_BYTES, FlowSpec, SecureIdentityFlow
from cipher_worker.codecs.dcgan64 import ATTRIBUTES_PATH, TRUNCATION
from cipher_worker.codecs.dcgan64_net import Z_DIM, DCGANGenerator, load_generator

SAME_PERSON = 0.363  # SFace's published threshold (lab.facemetrics)


@dataclass(frozen=True)
class CipherTrainConfig:
    seed: int = 0
    latent_steps: int = 2500  # phase A: latent stand-ins for the identity network
    latent_batch: int = 256
    sface_steps: int = 120  # phase B: through the generator and SFace
    sface_batch: int = 8
    lr: float = 3e-3
    finetune_lr: float = 2e-4
    prior_weight: float = 6.0
    wrong_weight: float = 1.0  # the wrong-key terms: a wrong key must never bring the face back
    # the prior on wrong-key recoveries; 0 for the committed weights (see docs/cipher.md: at 6, with
    # wrong_weight 2, decoys stay inside the prior but a wrong key's face drifts towards the original)
    wrong_prior_weight: float = 0.0
    pixel_weight: float = 0.01
    eval_samples: int = 192


class Split:
    """The dcgan64 codec's basis: z ↔ (attributes, identity) as torch ops."""

    def __init__(self) -> None:
        split = np.load(ATTRIBUTES_PATH)
        self.attribute_dim = int(split["attribute_dim"])
        self.basis = torch.from_numpy(split["basis"]).float()  # (100, 100) orthonormal
        self.template = split["template"].astype(np.float64)  # (5, 2) landmarks in the 64 px crop

    def parts(self, z: Tensor) -> tuple[Tensor, Tensor]:
        coords = z @ self.basis
        return coords[:, : self.attribute_dim], coords[:, self.attribute_dim :]

    def z(self, attributes: Tensor, identity: Tensor) -> Tensor:
        return torch.cat([attributes, identity], 1) @ self.basis.T


class IdentityJudge(nn.Module):
    """(N, 3, 64, 64) renders in [−1, 1] → (N, 128) unit SFace features, differentiably."""

    def __init__(self, sface: nn.Module, template: np.ndarray) -> None:
        super().__init__()
        import cv2

        from .sface import SFACE_TEMPLATE

        matrix, _ = cv2.estimateAffinePartial2D(template.astype(np.float32), SFACE_TEMPLATE.astype(np.float32))
        self.matrix = matrix  # 64 px crop → 112 px SFace crop
        # affine_grid wants, per output pixel (normalised), where to read in the input (normalised)
        to_crop = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))
        out_norm = np.array([[2 / 112, 0, 1 / 112 - 1], [0, 2 / 112, 1 / 112 - 1], [0, 0, 1]])
        in_norm = np.array([[2 / 64, 0, 1 / 64 - 1], [0, 2 / 64, 1 / 64 - 1], [0, 0, 1]])
        theta = in_norm @ to_crop @ np.linalg.inv(out_norm)
        self.register_buffer("theta", torch.from_numpy(theta[:2]).float()[None])
        self.sface = sface

    def aligned(self, images: Tensor) -> Tensor:
        """(N, 3, 112, 112) in [0, 255], as OpenCV's alignCrop would cut them."""
        theta = self.theta.expand(len(images), 2, 3)  # type: ignore[operator]
        grid = F.affine_grid(theta, [len(images), 3, 112, 112], align_corners=False)
        return F.grid_sample((images + 1) * 127.5, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(self.sface(self.aligned(images)), dim=1)


def _keys(n: int, gen: torch.Generator) -> Tensor:
    """Random passwords in the cipher's form: KEY_BYTES bytes each mapped to [−1, 1]."""
    return torch.randint(0, 256, (n, KEY_BYTES), generator=gen).float() / 127.5 - 1


def _hinge_cos(a: Tensor, b: Tensor) -> Tensor:
    return F.cosine_similarity(a, b, dim=1).clamp(min=0).mean()


def _hinge_near(a: Tensor, b: Tensor) -> Tensor:
    """max(0, 1 − |a − b| / √(2d)): zero once ``a`` and ``b`` are as far apart as two independent
    prior samples. Unlike a cosine, its gradient does not vanish where a ≈ b, which is where
    every key starts (an untrained flow ignores its key)."""
    return (1 - (a - b).norm(dim=1) / math.sqrt(2 * a.shape[1])).clamp(min=0).mean()


def _prior_kl(x: Tensor, y: Tensor, logdet: Tensor) -> Tensor:
    """KL(T#N(0, I) ‖ N(0, I)) per coordinate, estimated on the batch."""
    return (0.5 * (y**2).sum(1) - 0.5 * (x**2).sum(1) - logdet).mean() / x.shape[1]


def _load_judge(split: Split, log: Callable[[str], None]) -> IdentityJudge | None:
    try:
        from .sface import check_against_opencv, load_sface

        judge = IdentityJudge(load_sface(), split.template)
    except ImportError as exc:
        log(f"SFace cannot be converted here ({exc}); training on the latent stand-in losses only")
        return None
    # the conversion must match OpenCV's SFace on what it will judge: aligned generator faces
    with torch.no_grad():
        images = load_generator()(torch.randn(8, Z_DIM, generator=torch.Generator().manual_seed(99)))
        crops = judge.aligned(images).round().clamp(0, 255).permute(0, 2, 3, 1).to(torch.uint8).numpy()
    agreement = check_against_opencv(judge.sface, np.ascontiguousarray(crops))
    log(f"converted SFace against OpenCV's on aligned generator faces: min cos {agreement:.4f}")
    if agreement < 0.999:
        log("the conversion does not match OpenCV's SFace; training on the latent stand-in losses only")
        return None
    return judge


def _render(generator: DCGANGenerator, split: Split, attributes: Tensor, identity: Tensor, typical: bool) -> Tensor:
    return generator(split.z(attributes, identity * (TRUNCATION if typical else 1.0)))


def _print(message: str) -> None:
    print(message, flush=True)  # progress shows as it happens, also in a log file


def train_cipher(name: str, out: Path | None = None, config: CipherTrainConfig = CipherTrainConfig(), log=_print):
    if name != "ifadit":
        raise SystemExit(f"training the {name} cipher is not built yet; `--name ifadit` is")
    out = out or weights_path(name, "dcgan64")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    split = Split()
    dim = Z_DIM - split.attribute_dim
    flow = SecureIdentityFlow(FlowSpec(dim=dim, seed=config.seed))
    started = time.perf_counter()
    metrics: dict[str, float] = {}

    # phase A: latent stand-ins — cosines of identity coordinates for the identity network's
    opt = torch.optim.Adam(flow.parameters(), lr=config.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.latent_steps, pct_start=0.1)
    for step in range(config.latent_steps):
        x = torch.randn(config.latent_batch, dim, generator=gen)
        k1, k2 = _keys(len(x), gen), _keys(len(x), gen)
        y1, logdet = flow(x, k1)
        y2, _ = flow(x, k2)
        wrong = flow.inverse(y1, k2)
        _, wrong_logdet = flow(wrong, k2)  # the composed map's log-det: forward k1 minus forward k2 there
        losses = {
            "anon": _hinge_cos(y1, x),
            "div_key": _hinge_cos(y1, y2),
            "div_face": _hinge_cos(y1, flow(x.roll(1, 0), k1)[0]),  # another face under the same key
            "wrong": _hinge_cos(wrong, x),
            "far_key": _hinge_near(y1, y2),
            "far_wrong": _hinge_near(wrong, x),
            "prior": _prior_kl(x, y1, logdet),
            "prior_wrong": _prior_kl(x, wrong, logdet - wrong_logdet),
        }
        loss = sum(v * _weight(k, config) for k, v in losses.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        sched.step()
        if step % 500 == 0 or step == config.latent_steps - 1:
            log(f"latent {step}/{config.latent_steps} " + _show(losses) + f" ({time.perf_counter() - started:.0f}s)")
    metrics.update({f"latent_{k}": float(v.detach()) for k, v in losses.items()})

    generator = load_generator().requires_grad_(False)
    judge = _load_judge(split, log)
    identity_loss = "latent"
    if judge is not None and config.sface_steps:
        identity_loss = "sface"
        opt = torch.optim.Adam(flow.parameters(), lr=config.finetune_lr, betas=(0.9, 0.99))
        for step in range(config.sface_steps):
            z = torch.randn(config.sface_batch, Z_DIM, generator=gen)
            attributes, x = split.parts(z)
            key = _keys(1, gen).expand(len(x), KEY_BYTES)  # one key for the batch: inter-face diversity
            k2 = _keys(len(x), gen)
            y1, logdet = flow(x, key)
            y2, _ = flow(x, k2)
            wrong = flow.inverse(y1, k2)
            _, wrong_logdet = flow(wrong, k2)
            with torch.no_grad():
                original = generator(z)
                e_orig = judge(original)
            anon1 = _render(generator, split, attributes, y1, typical=True)
            e1 = judge(anon1)
            e2 = judge(_render(generator, split, attributes, y2, typical=True))
            e_wrong = judge(_render(generator, split, attributes, wrong, typical=True))
            losses = {
                "anon": _hinge_cos(e1, e_orig),
                "div_key": _hinge_cos(e1, e2),
                "div_face": _hinge_cos(e1, e1.roll(1, 0)),
                "wrong": _hinge_cos(e_wrong, e_orig),
                "far_key": _hinge_near(y1, y2),
                "far_wrong": _hinge_near(wrong, x),
                "prior": _prior_kl(x, y1, logdet),
                "prior_wrong": _prior_kl(x, wrong, logdet - wrong_logdet),
                "pixel": (anon1 - original).abs().mean(),
            }
            loss = sum(v * _weight(k, config) for k, v in losses.items())
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            opt.step()
            if step % 20 == 0 or step == config.sface_steps - 1:
                log(f"sface {step}/{config.sface_steps} " + _show(losses) + f" ({time.perf_counter() - started:.0f}s)")
        metrics.update({f"sface_{k}": float(v.detach()) for k, v in losses.items()})

    flow.eval()
    metrics.update(evaluate_flow(flow, generator, split, judge, config))
    metrics["seconds"] = time.perf_counter() - started
    state = {k: v.detach().clone() for k, v in flow.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "spec": flow.spec.to_dict(),
        "codec": "dcgan64",
        "state": state,
        "identity_loss": identity_loss,
        "config": asdict(config),
        "metrics": metrics,
    }
    torch.save(checkpoint, out)
    log(f"saved {out} ({out.stat().st_size / 1e6:.1f} MB, fingerprint {state_fingerprint(state).hex()[:12]})")
    log(" ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics


def _weight(term: str, config: CipherTrainConfig) -> float:
    if term == "prior_wrong":
        return config.wrong_prior_weight
    if term == "prior":
        return config.prior_weight
    if term == "pixel":
        return config.pixel_weight
    return config.wrong_weight if term in ("wrong", "far_wrong") else 1.0


def _show(losses: dict[str, Tensor]) -> str:
    return " ".join(f"{k}={float(v.detach()):.4f}" for k, v in losses.items())


def evaluate_flow(
    flow: SecureIdentityFlow, generator: DCGANGenerator, split: Split, judge: IdentityJudge | None, config
) -> dict[str, float]:
    """On held-out faces and keys: the round trip in float64, the strangers' prior, and (with
    the judge) SFace cosines of stranger, other key's stranger and wrong-key recovery to the
    original, beside a torus-like fresh prior sample's."""
    gen = torch.Generator().manual_seed(config.seed + 1)
    n = config.eval_samples
    z = torch.randn(n, Z_DIM, generator=gen)
    attributes, x = split.parts(z)
    k1, k2 = _keys(n, gen), _keys(n, gen)
    out: dict[str, float] = {}
    with torch.no_grad():
        flow64 = SecureIdentityFlow(flow.spec).double()
        flow64.load_state_dict(flow.state_dict())
        y64, _ = flow64(x.double(), k1.double())
        out["round_trip_max_error"] = float((flow64.inverse(y64, k1.double()) - x.double()).abs().max())
        y1, logdet = flow(x, k1)
        y2, _ = flow(x, k2)
        wrong = flow.inverse(y1, k2)
        out["prior_kl"] = float(_prior_kl(x, y1, logdet))
        out["stranger_std"] = float(y1.std())
        out["wrong_key_std"] = float(wrong.std())
        out["wrong_key_prior_kl"] = float(_prior_kl(x, wrong, logdet - flow(wrong, k2)[1]))
        out["latent_cos_stranger"] = float(F.cosine_similarity(y1, x).mean())
        if judge is not None:
            cos: dict[str, list[Tensor]] = {k: [] for k in ("stranger", "other_key", "wrong_key", "fresh_sample")}
            for rows in torch.arange(n).split(32):
                e = judge(generator(z[rows]))
                a = attributes[rows]
                e1 = judge(_render(generator, split, a, y1[rows], True))
                fresh = torch.randn(len(rows), x.shape[1], generator=gen)  # what the torus draws
                cos["stranger"].append(F.cosine_similarity(e1, e))
                cos["other_key"].append(F.cosine_similarity(e1, judge(_render(generator, split, a, y2[rows], True))))
                cos["wrong_key"].append(F.cosine_similarity(judge(_render(generator, split, a, wrong[rows], True)), e))
                cos["fresh_sample"].append(F.cosine_similarity(judge(_render(generator, split, a, fresh, True)), e))
            for k, parts in cos.items():
                values = torch.cat(parts)
                out[f"sface_cos_{k}"] = float(values.mean())
                out[f"sface_same_person_{k}"] = float((values >= SAME_PERSON).float().mean())
    assert math.isfinite(out["round_trip_max_error"])
    return out
