"""Fit the dcgan64 appearance model (:mod:`cipher_worker.codecs.appearance`) on generated faces.

Coordinates are drawn as the cipher's strangers are rendered — attributes and identity
standard normal, identity at the codec's truncation — and each render is measured with the
very judges the stranger chooser uses: the dense mesh (fitted from the codec's landmark
template, its five points then handed to the gender network and the accessory probes) and
the skin's Lab mean. A
two-hidden-layer network then learns coordinates → looks. Labelling is the slow
part (≈ 15 ms a face), spread over worker processes; each chunk has its own seed, so the
data do not depend on how many workers there are.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from cipher_worker.codecs.appearance import LOOKS
from cipher_worker.codecs.base import Latents
from cipher_worker.codecs.dcgan64 import TRUNCATION, DCGAN64Codec

_CHUNK = 500
_HIDDEN = 256


class _Labeller:
    def __init__(self) -> None:
        from cipher_worker.agegender import AgeGenderJudge
        from cipher_worker.composite import lab_stats
        from cipher_worker.facemask import crop_weights, template_skin
        from cipher_worker.mesh import FaceMesh
        from cipher_worker.strangers import accessory_probes

        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        self.codec, self.judge, self.mesh = DCGAN64Codec("cpu", foresight=False), AgeGenderJudge(), FaceMesh()
        self.skin_weights = crop_weights(template_skin(self.codec.template), self.codec.crop_size)
        self.lab_stats = lab_stats
        self.probes = accessory_probes

    def coords(self, seed: int) -> np.ndarray:
        """(CHUNK, 100) coordinates as rendered: attributes, then truncated identity."""
        rng = np.random.default_rng(seed)
        k = self.codec.attribute_dim
        identity = rng.standard_normal((_CHUNK, 100 - k)) * TRUNCATION
        return np.concatenate([rng.standard_normal((_CHUNK, k)), identity], 1)

    def label(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        coords = self.coords(seed)
        k = self.codec.attribute_dim
        renders = self.codec.render(Latents(coords[:, k:] / TRUNCATION, coords[:, :k].astype(np.float32)), typical=True)
        meshes = [self.mesh.fit(image, self.codec.template) for image in renders]
        five = np.stack([m.landmarks5() for m in meshes])
        looks = np.column_stack(
            [
                self.judge.male(list(renders), five),
                np.stack([m.expression() for m in meshes]),
                np.stack([self.lab_stats(image, self.skin_weights)[:3] for image in renders]),
                self.probes(renders, five),
            ]
        )
        return coords, looks


_labeller: _Labeller | None = None


def _label_chunk(seed: int) -> tuple[np.ndarray, np.ndarray]:
    global _labeller
    if _labeller is None:
        _labeller = _Labeller()
    return _labeller.label(seed)


def fit_appearance(
    out: Path, seed: int = 0, samples: int = 32_000, workers: int = 2, steps: int = 5_000, log: Callable = print
) -> dict[str, float]:
    started = time.perf_counter()
    seeds = [seed * 100_003 + i for i in range(-(-samples // _CHUNK))]
    # spawned, not forked: a forked torch can deadlock in its thread pools
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        chunks = list(pool.map(_label_chunk, seeds))
    coords = np.concatenate([c for c, _ in chunks]).astype(np.float32)
    looks = np.concatenate([lk for _, lk in chunks]).astype(np.float32)
    log(f"labelled {len(coords)} generated faces ({time.perf_counter() - started:.0f}s)")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    held_out = np.arange(len(coords)) >= int(0.9 * len(coords))
    mean, std = looks[:, 1:].mean(0), looks[:, 1:].std(0)
    x = torch.from_numpy(coords)
    male = torch.from_numpy(looks[:, 0])
    rest = torch.from_numpy((looks[:, 1:] - mean) / std)
    net = nn.Sequential(
        nn.Linear(coords.shape[1], _HIDDEN), nn.SiLU(), nn.Linear(_HIDDEN, _HIDDEN), nn.SiLU(),
        nn.Linear(_HIDDEN, len(LOOKS)),
    )  # fmt: skip
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    train_rows = np.flatnonzero(~held_out)
    for _ in range(steps):
        b = torch.from_numpy(rng.choice(train_rows, 512))
        y = net(x[b])
        # the judge's P(male) is a soft label; the rest are standardized regressions
        loss = nn.functional.binary_cross_entropy_with_logits(y[:, 0], male[b]) + ((y[:, 1:] - rest[b]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
    with torch.no_grad():
        y = net(x[held_out]).numpy()
    truth = looks[held_out]
    sure = np.abs(truth[:, 0] - 0.5) >= 0.3
    predicted_male = (y[:, 0] > 0)[sure]
    metrics = {
        "gender agreement (sure faces)": float((predicted_male == (truth[sure, 0] > 0.5)).mean()),
        "gender base rate": float(max((truth[sure, 0] > 0.5).mean(), (truth[sure, 0] <= 0.5).mean())),
    }
    predicted = y[:, 1:] * std + mean
    for i, name in enumerate(LOOKS[1:]):
        metrics[f"r2 {name}"] = float(1 - ((predicted[:, i] - truth[:, i + 1]) ** 2).mean() / truth[:, i + 1].var())
    linear = [m for m in net if isinstance(m, nn.Linear)]
    out.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {"layers": len(linear), "out_mean": mean, "out_std": std}
    for i, layer in enumerate(linear):
        arrays[f"w{i}"] = layer.weight.detach().numpy().T.copy()
        arrays[f"b{i}"] = layer.bias.detach().numpy().copy()
    np.savez(out, **arrays)
    log(f"saved {out} ({time.perf_counter() - started:.0f}s): " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
    return metrics
