"""``python -m lab bench --codec stylegan2``: the StyleGAN2 codec's cost on the CPU.

Without checkpoints it writes random-weight ones in the published formats to a temporary
folder — a 256 px, channel-multiplier-2 rosinality generator and a full-size e4e (IR-SE-50,
14 styles for 256 px) — since speed does not depend on the weights' values; with
``--stylegan2-ckpt``/``--e4e-ckpt`` it measures those. Reported: forward time per face of
the encoder and the generator by batch size; the whole pipeline on the 12 MP photo with 6
faces; and the pipeline's time per face over the bare forwards of the same batch. torch
uses every core (its budgets assume 2 cores). Benchmarks print, they do not assert.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cipher_worker import keys
from cipher_worker.codecs import CodecConfig
from cipher_worker.codecs.stylegan2.codec import StyleGAN2Codec
from cipher_worker.codecs.stylegan2.generator import GeneratorSpec, channels_for
from cipher_worker.pipeline import Pipeline
from lab.benchkit import RUNS, build_photo, log, peak_rss_mb
from lab.random_weights import random_generator_state, write_random_checkpoint
from lab.report import command_line, markdown_table, ms, save_report

BATCHES = (1, 2, 4, 6)
BUDGETS = {"generator_s": 0.8, "encoder_s": 0.6, "overhead": 1.3}  # per face at batch 4; ratio
BUDGET_BATCH = 4
SIZE, CHANNEL_MULTIPLIER = 256, 2
GENERATOR_FILE, ENCODER_FILE = "stylegan2-256-random.pt", "e4e-256-random.pt"


def random_checkpoints(folder: Path) -> CodecConfig:
    """A random 256 px cm-2 generator and a full-size e4e for it, in their published formats.
    Written by a child process, so building them does not count in this process's peak memory."""
    child = multiprocessing.get_context("spawn").Process(target=_write_random_checkpoints, args=(folder,))
    child.start()
    child.join()
    if child.exitcode:
        raise RuntimeError(f"writing the random checkpoints failed (exit code {child.exitcode})")
    return CodecConfig("stylegan2", str(folder / GENERATOR_FILE), str(folder / ENCODER_FILE))


def _write_random_checkpoints(folder: Path) -> None:
    spec = GeneratorSpec(SIZE, 512, 8, channels_for(SIZE, CHANNEL_MULTIPLIER))
    torch.save({"g_ema": random_generator_state(spec), "latent_avg": torch.zeros(512)}, folder / GENERATOR_FILE)
    write_random_checkpoint(folder / ENCODER_FILE, "e4e", n_styles=spec.n_latent)


def _best(fn, runs: int = RUNS) -> float:
    """Seconds of the fastest of ``runs`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def forward_times(codec: StyleGAN2Codec, batch: int) -> tuple[float, float]:
    """Bare forward seconds per face of the encoder and of the generator at ``batch``."""
    rng = np.random.default_rng(batch)
    side = codec.encoder.input_size
    images = torch.from_numpy(rng.uniform(-1, 1, (batch, 3, side, side)).astype(np.float32)).to(codec.device)
    with torch.inference_mode():
        w = codec.generator.mapping(torch.randn(batch, codec.generator.spec.style_dim, device=codec.device))
        wplus = w[:, None].expand(-1, codec.generator.n_latent, -1).contiguous()
        encoder = _best(lambda: codec.encoder(images))
        generator = _best(lambda: codec.generator(wplus))
    return encoder / batch, generator / batch


def run(out: Path | None, config: CodecConfig) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="veil-bench-") as folder:
        random_weights = not (config.stylegan2_ckpt or config.e4e_ckpt)
        if random_weights:
            log("writing random-weight checkpoints (256 px cm 2 generator, full e4e)")
            config = random_checkpoints(Path(folder))
        log("loading the codec")
        from cipher_worker.api import get_pipeline

        pipeline = get_pipeline(config)
        codec = pipeline.codec
        assert isinstance(codec, StyleGAN2Codec)
        scaling = {}
        for batch in BATCHES:
            scaling[batch] = forward_times(codec, batch)
            log(f"batch {batch}: encoder {scaling[batch][0]:.3f} s/face, generator {scaling[batch][1]:.3f} s/face")
        bf16 = codec.encoder.bf16
        codec.encoder.bf16 = True  # the opt-in VEIL_STYLEGAN2_ENCODER_BF16, for comparison
        encoder_bf16_s = forward_times(codec, BUDGET_BATCH)[0]
        codec.encoder.bf16 = bf16
        result = _pipeline_times(pipeline)
    spec = codec.generator.spec
    encoder_s, generator_s = scaling[BUDGET_BATCH]
    bare = sum(scaling[min(result["faces"], max(BATCHES))]) * result["faces"] if result["faces"] else float("nan")
    result.update(
        weights="random weights in the published formats"
        if random_weights
        else f"{config.stylegan2_ckpt}, {config.e4e_ckpt}",
        model=f"{spec.size} px generator, channels {spec.channels}, {codec.encoder.kind} encoder "
        f"({codec.encoder.input_size} px input, {codec.encoder.n_styles} styles)",
        codec=f"{codec.id} ({codec.fingerprint.hex()[:12]})",
        threads=torch.get_num_threads(),
        load_average=[round(v, 2) for v in os.getloadavg()],
        scaling={b: {"encoder_s": e, "generator_s": g} for b, (e, g) in scaling.items()},
        encoder_s=encoder_s,
        encoder_bf16_s=encoder_bf16_s,
        generator_s=generator_s,
        bare_forwards_s=bare,
        overhead=result["anonymize_s"] / bare,
        peak_rss_mb=peak_rss_mb(),
    )
    result["ok"] = {k: result[k] <= v for k, v in BUDGETS.items()}
    result["summary"] = (
        f"stylegan2 ({result['model']}), {result['threads']} threads: encoder {encoder_s:.3f} s/face, generator "
        f"{generator_s:.3f} s/face at batch {BUDGET_BATCH}; 12 MP photo with {result['faces']} faces: anonymize "
        f"{result['anonymize_s']:.2f} s = {result['overhead']:.2f}× the bare forwards; "
        f"peak RSS {result['peak_rss_mb']:.0f} MiB"
    )
    save_report(result, out, markdown_report, log)
    return result


def _pipeline_times(pipeline: Pipeline) -> dict[str, Any]:
    private, public = keys.generate_album_keypair()
    photo = build_photo()
    log("the pipeline on the 12 MP photo (warm-up, then the best of runs)")
    anonymized = pipeline.anonymize(photo, public, fidelity="latent", fmt="JPEG")
    runs = []
    for _ in range(RUNS):
        start = time.perf_counter()
        result = pipeline.anonymize(photo, public, fidelity="latent", fmt="JPEG")
        runs.append((time.perf_counter() - start, result.timings))
    total, stages = min(runs, key=lambda r: r[0])
    recover = _best(lambda: pipeline.recover(anonymized.image, anonymized.envelope, album_private=private), 1)
    return {"faces": len(anonymized.faces), "anonymize_s": total, "stages_s": dict(stages), "recover_s": recover}


def markdown_report(r: dict[str, Any]) -> str:
    now = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    ok = {k: "yes" if v else "no" for k, v in r["ok"].items()}
    rows = [
        [f"encoder per face, batch {BUDGET_BATCH}", ms(r["encoder_s"]), ms(BUDGETS["encoder_s"]), ok["encoder_s"]],
        [f"encoder per face, batch {BUDGET_BATCH}, bfloat16 (opt-in)", ms(r["encoder_bf16_s"]), "—", "—"],
        [
            f"generator per face, batch {BUDGET_BATCH}",
            ms(r["generator_s"]),
            ms(BUDGETS["generator_s"]),
            ok["generator_s"],
        ],
        [
            f"anonymize ({r['faces']} faces, latent fidelity) over the bare forwards",
            f"{r['overhead']:.2f}× ({ms(r['anonymize_s'])} vs {ms(r['bare_forwards_s'])})",
            f"≤ {BUDGETS['overhead']}×",
            ok["overhead"],
        ],
        ["recover (latent: renders every face)", ms(r["recover_s"]), "—", "—"],
    ]
    rows += [[f"anonymize · {stage}", ms(seconds), "—", "—"] for stage, seconds in r["stages_s"].items()]
    rows.append(["peak RSS", f"{r['peak_rss_mb']:.0f} MiB", "—", "—"])
    scaling = [[b, ms(s["encoder_s"]), ms(s["generator_s"])] for b, s in r["scaling"].items()]
    return "\n".join(
        [
            "# Veil benchmark — stylegan2 codec",
            "",
            f"Produced by `{command_line()}` on {now}. {r['model']}; {r['weights']}; codec {r['codec']}; "
            f"{r['threads']} torch threads; load average {r['load_average']}. Forward times are the best of "
            f"{RUNS} after a warm-up; the photo is the 12 MP JPEG of `docs/bench.md`.",
            "",
            markdown_table(["what", "measured", "budget", "ok"], rows),
            "",
            "## Batch-size scaling (seconds per face)",
            "",
            markdown_table(["batch", "encoder", "generator"], scaling),
            "",
        ]
    )
