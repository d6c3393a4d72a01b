"""Data-free training of a learned cipher on the dcgan64 codec (``python -m lab.train cipher
--name ifadit|riddle|facersa|fit``; ``make train-cipher NAME=…``).

Every cipher trains the same way; what differs is its :class:`~lab.train.cipher_kit.Objective`
(:mod:`lab.train.ifadit_objective`, :mod:`lab.train.riddle_objective`,
:mod:`lab.train.facersa_objective`: the paper's losses, scaled down):

* **phase A** on latent stand-ins for the identity network (cosines of the identity
  coordinates themselves), which costs microseconds a step, on prior samples x ~ N(0, I);
* **phase B** fine-tunes through the generator and SFace (``lab.train.sface``) on the renders
  warped to its 112 px alignment. If SFace cannot be converted (onnx or onnx2torch missing)
  or does not match OpenCV's, phase B is skipped and the file records ``identity_loss: latent``;
* a held-out evaluation (:func:`evaluate_cipher`) whose numbers the weights file keeps beside
  the network's spec, the codec, the config and the identity loss used.

Training sees SFace, so every report of a trained cipher must also give dlib's judgement
(``python -m lab eval --cipher NAME``). Deterministic for a given seed, torch version and
thread count.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from cipher_worker.ciphers import weights_path
from cipher_worker.codecs.dcgan64_net import Z_DIM, DCGANGenerator, load_generator

from .cipher_kit import (
    SAME_PERSON,
    CipherTrainConfig,
    IdentityJudge,
    JudgedFaces,
    Losses,
    Objective,
    Split,
    load_judge,
    render,
    save_weights,
    show_losses,
)
from .facersa_objective import FaceRSAObjective
from .fit_objective import FITObjective, train_fit
from .ifadit_objective import IFADITObjective
from .riddle_objective import RiDDLEObjective

OBJECTIVES: dict[str, type[Objective]] = {o.name: o for o in (IFADITObjective, RiDDLEObjective, FaceRSAObjective)}


def default_config(name: str, **overrides: Any) -> CipherTrainConfig:
    """The cipher ``name``'s training config: its objective's defaults, then ``overrides``."""
    objective: type[Objective] | type[FITObjective] = (
        FITObjective if name == FITObjective.name else _objective_type(name)
    )
    return replace(CipherTrainConfig(), **{**objective.defaults, "weights": dict(objective.weights), **overrides})


def _objective_type(name: str) -> type[Objective]:
    if name not in OBJECTIVES:
        names = ", ".join([*OBJECTIVES, FITObjective.name])
        raise SystemExit(f"no training for a {name} cipher; `--name` is one of {names}")
    return OBJECTIVES[name]


def _print(message: str) -> None:
    print(message, flush=True)  # progress shows as it happens, also in a log file


def train_cipher(
    name: str, out: Path | None = None, config: CipherTrainConfig | None = None, log: Callable[[str], None] = _print
) -> dict[str, float]:
    config = config or default_config(name)
    out = out or weights_path(name, "dcgan64")
    if name == FITObjective.name:  # pixel space: its own loop, with a discriminator
        return train_fit(out, config, log)
    objective_type = _objective_type(name)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    split = Split()
    dim = split.identity_dim
    objective = objective_type(dim, config.seed)
    net = objective.net
    started = time.perf_counter()
    metrics: dict[str, float] = {}

    def step(losses: Losses, opt: torch.optim.Optimizer, rise: float = 1.0) -> None:
        loss = sum(v * config.weights.get(k, 1.0) * (rise if k in objective.ramped else 1.0) for k, v in losses.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()

    opt = torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.latent_steps, pct_start=0.1)
    for i in range(config.latent_steps):
        losses = objective.latent_losses(torch.randn(config.latent_batch, dim, generator=gen), gen)
        step(losses, opt, min(1.0, i / max(1.0, config.ramp * config.latent_steps)))
        sched.step()
        if i % 250 == 0 or i == config.latent_steps - 1:
            log(f"latent {i}/{config.latent_steps} " + show_losses(losses) + f" ({time.perf_counter() - started:.0f}s)")
    if config.latent_steps:
        metrics.update({f"latent_{k}": float(v.detach()) for k, v in losses.items()})

    generator = load_generator().requires_grad_(False)
    judge = load_judge(split, log)
    identity_loss = "latent"
    if judge is not None and config.sface_steps:
        identity_loss = "sface"
        opt = torch.optim.Adam(net.parameters(), lr=config.finetune_lr, betas=(0.9, 0.99))
        for i in range(config.sface_steps):
            z = torch.randn(config.sface_batch, Z_DIM, generator=gen)
            attributes, x = split.parts(z)
            with torch.no_grad():
                original = generator(z)
                e = judge(original)
            losses = objective.sface_losses(JudgedFaces(x, attributes, original, e, generator, split, judge), gen)
            step(losses, opt)
            if i % 20 == 0 or i == config.sface_steps - 1:
                took = f" ({time.perf_counter() - started:.0f}s)"
                log(f"sface {i}/{config.sface_steps} " + show_losses(losses) + took)
        metrics.update({f"sface_{k}": float(v.detach()) for k, v in losses.items()})

    net.eval()
    metrics.update(evaluate_cipher(objective, generator, split, judge, config))
    metrics["seconds"] = time.perf_counter() - started
    spec = getattr(net, "spec").to_dict()  # noqa: B009 (nn.Module's typing hides attributes)
    save_weights(out, spec, net, identity_loss, config, metrics, log)
    return metrics


def evaluate_cipher(
    objective: Objective,
    generator: DCGANGenerator,
    split: Split,
    judge: IdentityJudge | None,
    config: CipherTrainConfig,
) -> dict[str, float]:
    """On held-out faces and passwords: the right-password round trip in float64 (as the cipher
    runs), the strangers' spread, the cipher's own numbers, and (with the judge) SFace cosines to
    the original of the stranger, the other password's stranger, the wrong-password and the
    right-password recoveries, beside a torus-like fresh prior sample's."""
    gen = torch.Generator().manual_seed(config.seed + 1)
    n = config.eval_samples
    z = torch.randn(n, Z_DIM, generator=gen)
    attributes, x = split.parts(z)
    (e1, d1), (e2, d2) = objective.passwords(n, gen), objective.passwords(n, gen)
    out: dict[str, float] = {}
    with torch.no_grad():
        as64 = copy.deepcopy(objective)
        as64.net.double()
        back = as64.decrypt(as64.encrypt(x.double(), e1.double()), d1.double())
        out["round_trip_max_error"] = float((back - x.double()).abs().max())
        out["round_trip_rms_error"] = float((back - x.double()).pow(2).mean().sqrt())
        y1, y2 = objective.encrypt(x, e1), objective.encrypt(x, e2)
        wrong, right = objective.decrypt(y1, d2), objective.decrypt(y1, d1)
        out["stranger_std"] = float(y1.std())
        out["wrong_key_std"] = float(wrong.std())
        out["latent_cos_stranger"] = float(F.cosine_similarity(y1, x).mean())
        out.update(objective.metrics(x, torch.Generator().manual_seed(config.seed + 2)))
        if judge is not None:
            names = ("stranger", "other_key", "wrong_key", "right_key", "fresh_sample")
            cos: dict[str, list[Tensor]] = {k: [] for k in names}
            for rows in torch.arange(n).split(32):
                e = judge(generator(z[rows]))
                a = attributes[rows]
                fresh = torch.randn(len(rows), x.shape[1], generator=gen)  # what the torus draws

                def seen(identity: Tensor, typical: bool = True, a: Tensor = a) -> Tensor:
                    return judge(render(generator, split, a, identity, typical))

                cos["stranger"].append(F.cosine_similarity(seen(y1[rows]), e))
                cos["other_key"].append(F.cosine_similarity(seen(y1[rows]), seen(y2[rows])))
                cos["wrong_key"].append(F.cosine_similarity(seen(wrong[rows]), e))
                cos["right_key"].append(F.cosine_similarity(seen(right[rows], typical=False), e))
                cos["fresh_sample"].append(F.cosine_similarity(seen(fresh), e))
            for k, parts in cos.items():
                values = torch.cat(parts)
                out[f"sface_cos_{k}"] = float(values.mean())
                out[f"sface_same_person_{k}"] = float((values >= SAME_PERSON).float().mean())
    return out
