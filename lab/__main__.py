"""``python -m lab eval|ciphers|bench``: measure the cipher on photos, compare the ciphers, time it on a 12 MP photo."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cipher_worker.cli import codec_flags, codec_from_args, run


def cmd_eval(args: argparse.Namespace) -> dict[str, Any]:
    from .evaluate import run_evaluation

    return run_evaluation(args.images, args.out, codec_from_args(args), args.keys, args.cipher, args.seed)


def cmd_ciphers(args: argparse.Namespace) -> dict[str, Any]:
    from .cipher_table import run_table

    return run_table(args.images, args.out, codec_from_args(args), args.keys, args.seed)


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    codec = codec_from_args(args)
    if codec.name == "stylegan2":  # a benchmark of its own: forwards by batch, random weights
        from .bench_stylegan2 import run as run_stylegan2

        return run_stylegan2(args.out, codec)
    from .bench import run_benchmark

    return run_benchmark(args.out, codec)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("eval", help="measure privacy, looks and exactness on photos")
    p.add_argument("--images", type=Path, help="folder of photos (default: the bundled test photos)")
    p.add_argument("--out", type=Path, help="write a Markdown report here (and the contact sheet beside it)")
    p.add_argument("--keys", type=int, default=5, help="content keys per face (at least 2; default 5)")
    p.add_argument(
        "--cipher", metavar="NAME", help="the latent cipher to evaluate (default torus; see anonymize --help)"
    )
    p.add_argument(
        "--seed", type=int, help="derive the content keys from this number (compare variants on the same keys)"
    )
    p.add_argument("--json", action="store_true")
    codec_flags(p)

    p = sub.add_parser("ciphers", help="every built cipher on the same photos and keys, in one table")
    p.add_argument("--images", type=Path, help="folder of photos (default: the bundled test photos)")
    p.add_argument("--out", type=Path, help="write the Markdown table here")
    p.add_argument("--keys", type=int, default=3, help="content keys per face (at least 2; default 3)")
    p.add_argument("--seed", type=int, default=0, help="derive the content keys from this number (default 0)")
    p.add_argument("--json", action="store_true")
    codec_flags(p)

    p = sub.add_parser("bench", help="time the pipeline on a 12 MP photo with 6 faces")
    p.add_argument("--out", type=Path, help="write a Markdown table here")
    p.add_argument("--json", action="store_true")
    codec_flags(p)
    return parser


def _human(command: str, report: dict[str, Any]) -> str:
    return str(report.get("summary", "done"))


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), {"eval": cmd_eval, "ciphers": cmd_ciphers, "bench": cmd_bench}, _human, argv)


if __name__ == "__main__":
    raise SystemExit(main())
