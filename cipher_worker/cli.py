"""``python -m cipher_worker``: keygen, anonymize, recover, inspect. (Evaluation and benchmarks
run from a checkout: ``python -m lab eval|bench``, see CONTRIBUTING.md.)

Exit codes: 0 success; 2 bad input (a one-line message, no traceback); 3 wrong key.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import carriers, envelope, keys, photofiles
from .ciphers import CIPHERS, DEFAULT_CIPHER, cipher_name
from .codecs import CODECS, CodecConfig, codec_config
from .errors import BadInput, PassphraseRequired, VeilError, WrongKey
from .exact import recover_exact
from .imageio import encode_image, format_for_path, read_file


def _read_passphrase(path: Path | None, *, confirm: bool = False) -> str | None:
    if path is not None:
        text = read_file(path).decode("utf-8", "replace").rstrip("\r\n")
        if not text:
            raise BadInput(f"{path} is empty; a passphrase file holds the passphrase on its first line")
        return text.splitlines()[0]
    return None


def _prompt_passphrase(prompt: str) -> str:
    if not sys.stdin.isatty():
        raise PassphraseRequired("this key is protected by a passphrase; give it with --passphrase-file")
    return getpass.getpass(prompt)


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise BadInput(f"cannot write {path}: {exc.strerror}") from None


def cmd_keygen(args: argparse.Namespace) -> dict[str, Any]:
    private, public = keys.generate_album_keypair()
    passphrase = _read_passphrase(args.passphrase_file)
    keys.write_private_key_file(args.out, private, passphrase)
    keys.write_public_key_file(args.public_out, public)
    return {
        "key": str(args.out),
        "public_key": str(args.public_out),
        "fingerprint": keys.key_fingerprint(public),
        "passphrase_protected": passphrase is not None,
    }


def codec_from_args(args: argparse.Namespace) -> CodecConfig:
    """The codec the flags ask for, over the environment's ``VEIL_*`` settings."""
    return codec_config(
        args.codec, stylegan2_ckpt=args.stylegan2_ckpt, e4e_ckpt=args.e4e_ckpt, identity_layers=args.identity_layers
    )


def _jobs(args: argparse.Namespace, default_suffix: str | None) -> list[photofiles.Job] | None:
    """The many-photo form's jobs (with ``--out-dir``), or None for the one-photo form INPUT OUTPUT."""
    if args.out_dir is None:
        if len(args.paths) != 2:
            raise BadInput("give an input and an output file, or any number of photos and folders with --out-dir DIR")
        return None
    suffix = f".{args.format}" if args.format else default_suffix
    args.out_dir.mkdir(parents=True, exist_ok=True)
    return photofiles.plan(args.paths, args.out_dir, suffix)


def _each(jobs: list[photofiles.Job], work: Callable[[Path, Path], dict[str, Any]], verb: str) -> dict[str, Any]:
    """``work`` on every job in turn, a line of progress on stderr for each; a photo that fails
    is reported and skipped, and the exit code says so at the end."""
    done: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for n, job in enumerate(jobs, 1):
        try:
            try:
                job.output.parent.mkdir(parents=True, exist_ok=True)  # a folder's subfolders, mirrored
            except OSError as exc:
                raise BadInput(f"cannot write {job.output}: {exc.strerror}") from None
            report = work(job.input, job.output)
        except VeilError as exc:
            failed.append({"input": str(job.input), "error": str(exc), "exit_code": exc.exit_code})
            print(f"[{n}/{len(jobs)}] {job.input}: {exc}", file=sys.stderr, flush=True)
            continue
        done.append(report)
        print(f"[{n}/{len(jobs)}] {_human(verb, report)}", file=sys.stderr, flush=True)
    faces = sum(len(r["faces"]) if isinstance(r["faces"], list) else r["faces"] for r in done)
    summary = f"{verb}: {len(done)} of {len(jobs)} photo(s), {faces} face(s)"
    if failed:
        summary += f"; {len(failed)} failed: " + ", ".join(f["input"] for f in failed)
    result: dict[str, Any] = {"photos": done, "failed": failed, "summary": summary}
    if failed:
        result["exit_code"] = max(f["exit_code"] for f in failed)
    return result


def cmd_anonymize(args: argparse.Namespace) -> dict[str, Any]:
    from .api import anonymize_photo, get_pipeline

    cipher_name(args.cipher)  # an unknown or unbuilt cipher: one line, before any work
    jobs = _jobs(args, None)
    public = keys.read_public_key_file(args.public_key)
    codec = codec_from_args(args)
    get_pipeline(codec, args.cipher)  # load the model once, first, so the times reported are the photos'

    def one(source: Path, target: Path) -> dict[str, Any]:
        fmt = format_for_path(target)
        started = time.perf_counter()
        result = anonymize_photo(
            read_file(source), public, fidelity=args.fidelity, fmt=fmt, codec=codec, cipher=args.cipher
        )
        _write(target, carriers.embed(result.image, result.envelope))
        report = {
            "input": str(source),
            "output": str(target),
            "faces": [{"index": f.index, "box": list(f.box), "score": round(f.score, 3)} for f in result.faces],
            "fidelity": args.fidelity,
            "cipher": args.cipher,
            "seconds": round(time.perf_counter() - started, 3),
        }
        if not result.faces:
            report["message"] = f"no faces found in {source.name}; wrote it with metadata stripped"
        return report

    return one(*args.paths) if jobs is None else _each(jobs, one, "anonymize")


def _album_key(args: argparse.Namespace) -> tuple[bytes | None, str | None]:
    """The album private key (None: it did not open and --decoy asks for decoys instead) and the
    decoy password (what was typed, or the key file's bytes), read once for every photo."""
    passphrase = _read_passphrase(args.passphrase_file)
    private: bytes | None = None
    try:
        try:
            private = keys.read_private_key_file(args.key, passphrase)
        except PassphraseRequired:
            passphrase = _prompt_passphrase(f"passphrase for {args.key.name}: ")
            private = keys.read_private_key_file(args.key, passphrase)
    except WrongKey:
        if not args.decoy:
            raise
    decoy_password = (passphrase or args.key.read_bytes().hex()) if args.decoy else None
    return private, decoy_password


def cmd_recover(args: argparse.Namespace) -> dict[str, Any]:
    jobs = _jobs(args, ".png")  # lossless by default: an exact recovery stays exact
    private, decoy_password = _album_key(args)
    codec = codec_from_args(args)

    def one(source: Path, target: Path) -> dict[str, Any]:
        fmt = format_for_path(target)
        data = read_file(source)
        env = carriers.extract(data)
        started = time.perf_counter()
        result = None
        if private is not None:  # an exact-fidelity photo needs no model
            try:
                result = recover_exact(data, env, album_private=private)
            except WrongKey:
                if decoy_password is None:
                    raise
        if result is None:  # latent fidelity, or a decoy: the codec renders the faces
            from .api import get_pipeline, recover_photo

            get_pipeline(codec)  # loaded once, and not counted in the photo's time
            started = time.perf_counter()
            result = recover_photo(data, env, album_private=private, decoy_password=decoy_password, codec=codec)
        _write(target, encode_image(result.pixels, fmt))
        return {
            "input": str(source),
            "output": str(target),
            "faces": result.faces,
            "seconds": round(time.perf_counter() - started, 3),
        }

    return one(*args.paths) if jobs is None else _each(jobs, one, "recover")


def cmd_inspect(args: argparse.Namespace) -> dict[str, Any]:
    env = envelope.Envelope.from_bytes(carriers.extract(read_file(args.input)))
    return {
        "input": str(args.input),
        "envelope_version": env.version,
        "codec": env.codec_id,
        "codec_fingerprint": env.codec_fingerprint.hex(),
        "cipher": env.cipher_id,
        "cipher_fingerprint": env.cipher_fingerprint.hex(),
        "fidelity": env.fidelity,
        "image_size": list(env.image_size),
        "faces": [{"index": i, "box": list(r.box)} for i, r in enumerate(env.faces)],
    }


def cmd_lab(args: argparse.Namespace) -> dict[str, Any]:
    raise BadInput(
        f"`{args.command}` is a development tool and is not installed with Veil; from a checkout run "
        f"`make {args.command}` or `python -m lab {args.command} --help`"
    )


def _human(command: str, report: dict[str, Any]) -> str:
    if "photos" in report:  # the many-photo form: each photo had its line on stderr
        return str(report["summary"])
    if command == "keygen":
        extra = " (passphrase protected)" if report["passphrase_protected"] else ""
        return f"wrote {report['key']}{extra} and {report['public_key']}; fingerprint {report['fingerprint']}"
    if command == "anonymize":
        if "message" in report:
            return report["message"]
        return f"anonymized {len(report['faces'])} face(s) in {report['seconds']:.2f}s → {report['output']}"
    if command == "recover":
        return f"recovered {report['faces']} face(s) in {report['seconds']:.2f}s → {report['output']}"
    if command == "inspect":
        faces = ", ".join(f"#{f['index']} at {tuple(f['box'])}" for f in report["faces"]) or "none"
        return (
            f"Veil envelope v{report['envelope_version']}: codec {report['codec']} "
            f"({report['codec_fingerprint'][:12]}), cipher {report['cipher']} "
            f"({report['cipher_fingerprint'][:12]}), fidelity {report['fidelity']}, "
            f"{report['image_size'][0]}×{report['image_size'][1]}, faces: {faces}"
        )
    return report.get("summary", "done")


def codec_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("codec (default: $VEIL_CODEC or dcgan64)")
    g.add_argument("--codec", choices=CODECS, help="latent codec; the stylegan2 flags below imply stylegan2")
    g.add_argument("--stylegan2-ckpt", metavar="PT", help="rosinality StyleGAN2 checkpoint ($VEIL_STYLEGAN2_CKPT)")
    g.add_argument("--e4e-ckpt", metavar="PT", help="e4e or pSp encoder checkpoint ($VEIL_E4E_CKPT)")
    g.add_argument("--identity-layers", metavar="A-B", help="W+ layers to encrypt, on the 18-layer scale (default 6-9)")


PATHS_HELP = (
    "INPUT OUTPUT (.jpg, .png or .webp; PNG and lossless WebP keep the rest of the photo exact), or with "
    "--out-dir any number of photos and folders (searched for .jpg, .png and .webp files)"
)


def many_flags(p: argparse.ArgumentParser, default_format: str) -> None:
    g = p.add_argument_group("many photos")
    g.add_argument("--out-dir", type=Path, metavar="DIR", help="write every output here, under its input's name")
    g.add_argument("--format", choices=("jpg", "png", "webp"), help=f"the outputs' format (default: {default_format})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cipher_worker", description="Veil's face cipher on the command line."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("keygen", help="make an album key pair")
    p.add_argument("--out", type=Path, required=True, help="private key file (mode 600)")
    p.add_argument("--public-out", type=Path, required=True, help="public key file (anonymizing needs only this)")
    p.add_argument("--passphrase-file", type=Path, help="protect the private key with the passphrase in this file")

    p = sub.add_parser(
        "anonymize",
        help="replace every face with a stranger",
        usage="%(prog)s INPUT OUTPUT --public-key PUB | %(prog)s PHOTO_OR_FOLDER ... --out-dir DIR --public-key PUB",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=PATHS_HELP)
    p.add_argument("--public-key", type=Path, required=True)
    p.add_argument("--fidelity", choices=("exact", "latent"), default="exact")
    p.add_argument(
        "--cipher",
        metavar="NAME",
        default=DEFAULT_CIPHER,
        help=f"the latent cipher: {' or '.join(CIPHERS)} (default {DEFAULT_CIPHER}); recover reads it from the photo",
    )
    p.add_argument("--json", action="store_true", help="print a JSON report")
    many_flags(p, "the input's")
    codec_flags(p)

    p = sub.add_parser(
        "recover",
        help="bring the original faces back",
        usage="%(prog)s INPUT OUTPUT --key KEY | %(prog)s PHOTO_OR_FOLDER ... --out-dir DIR --key KEY",
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help=PATHS_HELP)
    p.add_argument("--key", type=Path, required=True)
    p.add_argument("--passphrase-file", type=Path)
    p.add_argument("--decoy", action="store_true", help="on a wrong key, show plausible wrong faces and exit 0")
    p.add_argument("--json", action="store_true")
    many_flags(p, "png")
    codec_flags(p)

    p = sub.add_parser("inspect", help="describe a photo's recovery envelope (no secrets)")
    p.add_argument("input", type=Path)
    p.add_argument("--json", action="store_true")

    for verb, what in (("eval", "measure privacy and looks"), ("bench", "time the pipeline")):
        p = sub.add_parser(
            verb, help=f"{what} (from a checkout: python -m lab {verb})", add_help=False, prefix_chars="+"
        )
        p.add_argument("rest", nargs="*")  # whatever it is given, the answer is where to run it
    return parser


COMMANDS = {
    "keygen": cmd_keygen,
    "anonymize": cmd_anonymize,
    "recover": cmd_recover,
    "inspect": cmd_inspect,
    "eval": cmd_lab,
    "bench": cmd_lab,
}


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), COMMANDS, _human, argv)


def run(
    parser: argparse.ArgumentParser,
    commands: Mapping[str, Callable[[argparse.Namespace], dict[str, Any]]],
    human: Callable[[str, dict[str, Any]], str],
    argv: list[str] | None = None,
) -> int:
    """Parse, run the command, print its report (JSON with ``--json``); errors are one line."""
    args = parser.parse_args(argv)
    try:
        report = commands[args.command](args)
    except VeilError as exc:
        print(f"veil: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug, not bad input: one line, details on request
        if os.environ.get("VEIL_DEBUG"):
            raise
        print(f"veil: internal error: {type(exc).__name__}: {exc} (set VEIL_DEBUG=1 for details)", file=sys.stderr)
        return 1
    try:
        if getattr(args, "json", False):
            print(json.dumps(report, indent=2))
        else:
            print(human(args.command, report))
        sys.stdout.flush()
    except BrokenPipeError:  # `… --json | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush fails quietly
        return 141  # as a program killed by SIGPIPE
    return int(report.get("exit_code", 0))
