"""``python -m lab ciphers``: every built cipher through the same pipeline, on the same photos and
the same keys, in one table (``docs/ciphers.md``, written by ``make eval``).

Each column is one ``lab eval`` run (``lab.evaluate.run_evaluation``) with that cipher, plus
the size of its weights. Nothing in the table is typed in: a number that could not be measured
says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cipher_worker.ciphers import CIPHERS, weights_path
from cipher_worker.codecs import CodecConfig

from .report import FLOAT_EXACT, command_line, markdown_table, ms, save_report

Row = tuple[str, Callable[[dict[str, Any]], object]]


def _pct(value: object) -> str:
    return "–" if value is None else f"{100 * float(value):.1f}%"  # type: ignore[arg-type]


def _num(value: object, digits: int = 3) -> str:
    return "–" if value is None else f"{float(value):.{digits}f}"  # type: ignore[arg-type]


LOST = 1.0  # a coordinate off by a prior standard deviation or more: another face, not an approximation


PIXEL_LOST = 16.0  # a crop off by this much per channel on average (0–255) is another face, as a stranger is


def _exactness(algebra: dict[str, Any], name: str) -> str:
    """How a key check held: exact, exact to float precision, approximate, failed, or absent."""
    if algebra.get(f"{name}_bit_exact") is None:
        return "absent"
    if algebra[f"{name}_bit_exact"]:
        return "exact"
    error = float(algebra[f"{name}_max_error"])
    if algebra.get("space") == "pixels":  # a pixel cipher: the crops' mean error per face
        held = "≈" if error < PIXEL_LOST else "fails"
        return f"{held} (crop error ≤ {error:.1f}/255 a pixel)"
    if error < FLOAT_EXACT:
        return f"exact to float precision ({error:.0e})"
    if error < LOST:
        return f"≈ (max latent error {error:.3f})"
    return f"fails (max latent error {error:.3g})"


def _right_key(r: dict[str, Any]) -> str:
    """The envelope's identity decrypted against the codec's own encoding of the face."""
    algebra = r["key_algebra"]
    error = algebra.get("right_key_max_error")
    if error is not None and algebra.get("space") == "pixels":  # vs the original crop: no codec in the loop
        held = f"crop error ≤ {error:.1f}/255 a pixel (RMS {algebra['right_key_rms_error']:.1f})"
    else:
        held = "–" if error is None else "exact" if error < FLOAT_EXACT else f"max latent error {error:.3g}"
    return f"{held}; renders SFace cos ≥ {_num(algebra.get('right_key_sface_cosine_min'))}"


def _composed(name: str) -> Callable[[dict[str, Any]], str]:
    def shown(r: dict[str, Any]) -> str:
        algebra = r["key_algebra"]
        held = _exactness(algebra, name)
        cosine = algebra.get(f"{name}_sface_cosine_min")
        return held if cosine is None or held == "exact" else f"{held}; renders SFace cos ≥ {_num(cosine)}"

    return shown


def _time(milliseconds: object) -> str:
    return "–" if milliseconds is None else ms(float(milliseconds) / 1000)  # type: ignore[arg-type]


ROWS: list[Row] = [
    ("key algebra", lambda r: r["algebra"]),
    ("re-identified by SFace (≤ 5%)", lambda r: _pct(r.get("reidentification_rate_sface"))),
    ("re-identified by dlib (≤ 5%; never seen in training)", lambda r: _pct(r.get("reidentification_rate_dlib"))),
    ("re-detected (≥ 95%)", lambda r: _pct(r.get("detection_rate"))),
    ("landmark shift, IOD (≤ 0.10)", lambda r: _num(r.get("landmark_displacement"))),
    ("diversity across keys, SFace cos (≤ 0.50)", lambda r: _num(r.get("diversity"))),
    ("right key, vs the codec's reconstruction (FIT: vs the original crop)", _right_key),
    ("exact mode: photo recovered bit-identical", lambda r: "yes" if r.get("exact_recovery") else "no"),
    ("latent mode: recovered face vs original, SFace cos", lambda r: _num(r.get("latent_sface_cosine"))),
    (
        "wrong key vs original / vs anonymized, max SFace cos",
        lambda r: (
            f"{_num(r['key_algebra'].get('wrong_vs_original_max_cosine'))} / "
            f"{_num(r['key_algebra'].get('wrong_vs_anonymized_max_cosine'))}"
        ),
    ),
    ("sequential keys (p1 then p2; peeled p2, then p1)", _composed("p2_then_p1")),
    ("any order (peeled p1 first)", _composed("p1_then_p2")),
    ("combined key", _composed("combined")),
    ("cipher stage per face (every candidate stranger)", lambda r: _time(r.get("cipher_ms_per_face"))),
    ("whole anonymization per face", lambda r: _time(r.get("anonymize_ms_per_face"))),
    ("weights", lambda r: f"{r['weights_bytes'] / 1e6:.1f} MB" if r["weights_bytes"] else "none"),
]


def run_table(
    images: Path | None,
    out: Path | None,
    codec: CodecConfig | None = None,
    keys_per_face: int = 3,
    seed: int | None = 0,
    ciphers: tuple[str, ...] = CIPHERS,
) -> dict[str, Any]:
    """Evaluate every cipher in ``ciphers`` on the same photos and seeded keys; optionally write
    the Markdown table to ``out``. Returns each cipher's numbers under ``columns``."""
    from cipher_worker.api import get_pipeline

    from .evaluate import run_evaluation

    columns: dict[str, dict[str, Any]] = {}
    for name in ciphers:
        result = run_evaluation(images, None, codec, keys_per_face, name, seed)
        pipeline = get_pipeline(codec, name)
        path = weights_path(name, pipeline.codec.id)
        columns[name] = {
            **{k: v for k, v in result.items() if k not in ("sample_records", "per_photo", "summary")},
            "algebra": pipeline.cipher.algebra,
            "weights_bytes": path.stat().st_size if path.is_file() else 0,
        }
    report: dict[str, Any] = {"columns": columns, "keys_per_face": keys_per_face, "seed": seed}
    report["summary"] = markdown_table(["", *columns], _rows(columns))
    save_report(report, out, _markdown, print)
    return report


def _rows(columns: dict[str, dict[str, Any]]) -> list[list[object]]:
    return [[label, *(value(c) for c in columns.values())] for label, value in ROWS]


def _markdown(report: dict[str, Any]) -> str:
    columns = report["columns"]
    first = next(iter(columns.values()))
    return "\n".join(
        [
            "# The ciphers side by side",
            "",
            f"Produced by `{command_line()}`: {first['photos']} photos, {first['faces']} faces, "
            f"{report['keys_per_face']} keys a face (seed {report['seed']}, the same keys for every cipher), "
            f"codec {first['codec']}. Every cipher runs through the same pipeline, compositor and judges; "
            "how each is built and trained: docs/cipher.md.",
            "",
            report["summary"],
            "",
        ]
    )
