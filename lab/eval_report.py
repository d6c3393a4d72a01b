"""The evaluation as Markdown: every metric beside its target, the key algebra, the photos."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from cipher_worker import looks
from lab.contact_sheet import SHEET_KEYS, SHEET_NAME
from lab.facemetrics import DLIB_SAME_PERSON, SFACE_SAME_PERSON
from lab.report import FLOAT_EXACT, command_line, markdown_table

TARGETS = {
    "reidentification_rate_sface": ("≤", 0.05),
    "reidentification_rate_dlib": ("≤", 0.05),
    "detection_rate": ("≥", 0.95),
    "landmark_displacement": ("≤", 0.10),
    "diversity": ("≤", 0.50),
    "gender_kept_rate": ("≥", 0.90),
    "age_gap_median": ("≤", 6.0),
    "eyes_flipped_rate": ("≤", 0.10),
    "mouth_flipped_rate": ("≤", 0.10),
    "skin_delta_e_median": ("≤", 5.0),
    "off_face_rate": ("≤", 0.03),
}


def meets(key: str, value: float | None) -> bool | None:
    """Whether ``value`` meets :data:`TARGETS`[key]; None when there is nothing to judge."""
    if value is None or key not in TARGETS:
        return None
    op, bound = TARGETS[key]
    return value <= bound if op == "≤" else value >= bound


def fmt(value: Any, spec: str = ".3f") -> str:
    """A number for a report; ``—`` for missing values, yes/no for booleans."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and not np.isfinite(value):
        return "∞" if value > 0 else "−∞"
    return format(value, spec)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _target(key: str) -> str:
    op, bound = TARGETS[key]
    return f"{op} {_pct(bound)}" if "rate" in key else f"{op} {bound:g}"


def _metric_rows(r: dict[str, Any]) -> list[list[str]]:
    n = r["samples"]
    passed = r["passed"]
    return [
        ["faces detected on the originals", str(r["faces"]), "—", "—"],
        [
            f"re-identification, SFace cos ≥ {SFACE_SAME_PERSON} (n={n})",
            f"{_pct(r['reidentification_rate_sface'])} "
            f"(mean cos {fmt(r['sface_cosine_mean'])}, max {fmt(r['sface_cosine_max'])})",
            _target("reidentification_rate_sface"),
            fmt(passed["reidentification_rate_sface"]),
        ],
        [
            f"re-identification, dlib L2 < {DLIB_SAME_PERSON} (n={n})",
            f"{_pct(r['reidentification_rate_dlib'])} "
            f"(mean L2 {fmt(r['dlib_distance_mean'])}, min {fmt(r['dlib_distance_min'])})",
            _target("reidentification_rate_dlib"),
            fmt(passed["reidentification_rate_dlib"]),
        ],
        [
            f"re-identification from another photo of the person, SFace (n={r['cross_photo_samples']})",
            f"{_pct(r['cross_photo_reidentification_rate_sface'])} "
            f"(mean cos {fmt(r['cross_photo_sface_cosine_mean'])}; "
            f"originals {fmt(r['cross_photo_original_cosine_mean'])})",
            "—",
            "—",
        ],
        [
            f"reference: SFace re-identification with the masked face blanked (n={r['faces']})",
            f"{_pct(r['blanked_reidentification_rate_sface'])} (mean cos {fmt(r['blanked_sface_cosine_mean'])})",
            "—",
            "—",
        ],
        [
            f"detection rate on anonymized photos (n={n})",
            _pct(r["detection_rate"]),
            _target("detection_rate"),
            fmt(passed["detection_rate"]),
        ],
        [
            "landmark displacement (mean L2 / inter-ocular)",
            fmt(r["landmark_displacement"]),
            _target("landmark_displacement"),
            fmt(passed["landmark_displacement"]),
        ],
        [
            f"diversity: mean pairwise SFace cos over {r['keys_per_face']} keys",
            f"{fmt(r['diversity'])} (max {fmt(r['diversity_max'])})",
            _target("diversity"),
            fmt(passed["diversity"]),
        ],
        *(
            [label, value, _target(key), fmt(passed[key])]
            for label, key, value in (
                (
                    f"gender kept (judge ≥ {looks.GENDER_SURE:.0%} sure of the original, n={r['gender_samples']})",
                    "gender_kept_rate",
                    _pct(r["gender_kept_rate"]),
                ),
                ("median age gap (years)", "age_gap_median", fmt(r["age_gap_median"], ".1f")),
                (
                    f"eyes open/closed flipped (closed: lid gap < {looks.EYE_CLOSED} eye width)",
                    "eyes_flipped_rate",
                    _pct(r["eyes_flipped_rate"]),
                ),
                (
                    f"mouth open/closed flipped (open: lip gap > {looks.MOUTH_OPEN} mouth width)",
                    "mouth_flipped_rate",
                    _pct(r["mouth_flipped_rate"]),
                ),
                (
                    "median skin tone shift, inner face (CIE76 ΔE)",
                    "skin_delta_e_median",
                    fmt(r["skin_delta_e_median"], ".1f"),
                ),
                (
                    "changed pixels off the faces (outside the originals' mesh outlines, forehead to the hairline; "
                    "the detector's box where the mesh finds no face)",
                    "off_face_rate",
                    _pct(r["off_face_rate"]),
                ),
            )
        ),
        [
            "exact recovery (PNG, album key): identical pixels",
            f"{fmt(r['exact_recovery'])} (max abs diff {r['exact_max_abs_diff']})",
            "identical",
            fmt(r["exact_recovery"]),
        ],
        [
            "latent recovery, face boxes: PSNR dB / SSIM",
            f"{fmt(r['latent_psnr'], '.2f')} / {fmt(r['latent_ssim'])}",
            "—",
            "—",
        ],
        [
            "anonymized vs original, face boxes: PSNR dB / SSIM (reference)",
            f"{fmt(r['anonymized_psnr'], '.2f')} / {fmt(r['anonymized_ssim'])}",
            "—",
            "—",
        ],
        ["latent recovery: SFace cos to the original face", fmt(r["latent_sface_cosine"]), "—", "—"],
        [
            "ms per face: cipher stage (all candidates) / whole anonymization",
            f"{fmt(r.get('cipher_ms_per_face'), '.1f')} / {fmt(r.get('anonymize_ms_per_face'), '.0f')}",
            "—",
            "—",
        ],
    ]


def _algebra_rows(a: dict[str, Any]) -> list[list[str]]:
    rows = []
    if a.get("right_key_max_error") is not None:
        error = a["right_key_max_error"]
        rows.append(
            [
                "right key: latent error to the codec's encoding (max, rms)",
                f"{error:.3g}, {a['right_key_rms_error']:.3g}",
                f"< {FLOAT_EXACT:g}",
                fmt(error < FLOAT_EXACT),
            ]
        )
        cosines = f"min {fmt(a['right_key_sface_cosine_min'])}, mean {fmt(a['right_key_sface_cosine_mean'])}"
        rows.append(["right key: SFace cos of the render to the reconstruction", cosines, "1", "—"])
    for name, label in (
        ("p1_then_p2", "decrypt p1 then p2"),
        ("p2_then_p1", "decrypt p2 then p1"),
        ("combined", "combined key p1+p2"),
    ):
        rows.append([f"{label}: u bit-exact", fmt(a[f"{name}_bit_exact"]), "yes", fmt(a[f"{name}_bit_exact"])])
        error = a.get(f"{name}_max_error")
        rows.append(
            [
                f"{label}: max latent error",
                "—" if error is None else f"{error:.3g}",
                "0",
                fmt(error == 0 if error is not None else None),
            ]
        )
        cosine = a.get(f"{name}_sface_cosine_min")
        rows.append([f"{label}: SFace cos of the render to the reconstruction (min)", fmt(cosine), "1", "—"])
        rows.append(
            [
                f"{label}: render = codec reconstruction",
                fmt(a[f"{name}_pixel_identical"]),
                "identical",
                fmt(a[f"{name}_pixel_identical"]),
            ]
        )
    for key, label in (
        ("wrong_vs_original", "wrong key (decoy photo) vs original face"),
        ("wrong_vs_anonymized", "wrong key (decoy photo) vs anonymized face"),
    ):
        value = f"max {fmt(a[f'{key}_max_cosine'])}, mean {fmt(a[f'{key}_mean_cosine'])}"
        ok = None if a[f"{key}_max_cosine"] is None else a[f"{key}_max_cosine"] < SFACE_SAME_PERSON
        rows.append([f"{label}: SFace cos", value, f"< {SFACE_SAME_PERSON}", fmt(ok)])
    return rows


def _photo_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            p["photo"],
            f"{p['size'][0]}×{p['size'][1]}",
            str(p["faces"]),
            _pct(p["detection_rate"]),
            _pct(p["reidentification_rate_sface"]),
            _pct(p["reidentification_rate_dlib"]),
            fmt(p["landmark_displacement"]),
            fmt(p["diversity"]),
            f"{fmt(p['exact'])} ({p['exact_max_abs_diff']})",
            f"{fmt(p.get('latent_psnr'), '.1f')} / {fmt(p.get('latent_ssim'), '.2f')}",
            f"{fmt(p.get('anonymized_psnr'), '.1f')} / {fmt(p.get('anonymized_ssim'), '.2f')}",
        ]
        for p in rows
    ]


def markdown_report(r: dict[str, Any]) -> str:
    """The evaluation as Markdown: the metric table, key algebra and a per-photo table."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Veil evaluation",
        "",
        f"Produced by `{command_line()}` on {now}. Codec {r['codec']}; cipher {r.get('cipher', 'torus')}; "
        f"dlib {r['dlib']}.",
        f"{r['photos']} photos, {r['faces']} faces, each anonymized under {r['keys_per_face']} content keys "
        f"(PNG output): {r['samples']} (face, key) samples.",
        "",
        markdown_table(["metric", "value", "target", "pass"], _metric_rows(r)),
        "",
        f"Contact sheet: [`{SHEET_NAME}`]({SHEET_NAME}) — per face, the original and {SHEET_KEYS} strangers "
        "(three content keys).",
        "",
        f"## Key algebra (real identities of {r['key_algebra']['faces']} faces through the codec)",
        "",
        markdown_table(["check", "value", "target", "pass"], _algebra_rows(r["key_algebra"])),
        "",
        "## Per photo",
        "",
        markdown_table(
            [
                "photo",
                "size",
                "faces",
                "detected",
                "re-id SFace",
                "re-id dlib",
                "landmarks",
                "diversity",
                "exact (max diff)",
                "latent PSNR/SSIM",
                "anon PSNR/SSIM",
            ],
            _photo_rows(r["per_photo"]),
        ),
        "",
    ]
    return "\n".join(parts)


def summary_text(r: dict[str, Any]) -> str:
    a = r["key_algebra"]
    algebra_ok = all(a.get(k) for k in a if k.endswith(("_bit_exact", "_pixel_identical", "_unrelated")))
    failed = [k for k, ok in r["passed"].items() if ok is False]
    return "\n".join(
        [
            f"{r['photos']} photos, {r['faces']} faces, {r['samples']} (face, key) samples; codec {r['codec']}",
            f"re-identified: SFace {_pct(r['reidentification_rate_sface'])}, "
            f"dlib {_pct(r['reidentification_rate_dlib'])}; "
            f"detected {_pct(r['detection_rate'])}; landmarks moved {fmt(r['landmark_displacement'])} IOD; "
            f"diversity {fmt(r['diversity'])}",
            f"gender kept {_pct(r['gender_kept_rate'])}, median age gap {fmt(r['age_gap_median'], '.1f')} y, "
            f"eyes flipped {_pct(r['eyes_flipped_rate'])}, mouth flipped {_pct(r['mouth_flipped_rate'])}, "
            f"skin ΔE {fmt(r['skin_delta_e_median'], '.1f')}, off the faces {_pct(r['off_face_rate'])}",
            f"exact recovery {fmt(r['exact_recovery'])}; latent recovery PSNR {fmt(r['latent_psnr'], '.1f')} dB, "
            f"SSIM {fmt(r['latent_ssim'])}; key algebra {'passes' if algebra_ok else 'FAILS'}",
            "all targets met" if not failed else "targets missed: " + ", ".join(failed),
        ]
    )
