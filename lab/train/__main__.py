"""``python -m lab.train encoder|attributes|appearance|ffhq-template|cipher`` — rebuild the
dcgan64 codec's files; measure the stylegan2 codec's face template; train a learned cipher."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from cipher_worker.codecs.dcgan64 import APPEARANCE_PATH, ATTRIBUTES_PATH, ENCODER_PATH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.train", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encoder", help="train the data-free encoder (about 25 min on 2 cores)")
    enc.add_argument("--out", type=Path, default=ENCODER_PATH)
    enc.add_argument("--seed", type=int, default=0)
    enc.add_argument("--regress-steps", type=int)
    enc.add_argument("--finetune-steps", type=int)
    enc.add_argument("--cached-samples", type=int)
    att = sub.add_parser("attributes", help="fit the attribute/identity split of z (a few minutes)")
    att.add_argument("--out", type=Path, default=ATTRIBUTES_PATH)
    att.add_argument("--seed", type=int, default=0)
    att.add_argument("--samples", type=int, default=6000)
    app = sub.add_parser("appearance", help="fit the stranger-looks predictor (about 8 min on 2 cores)")
    app.add_argument("--out", type=Path, default=APPEARANCE_PATH)
    app.add_argument("--seed", type=int, default=0)
    app.add_argument("--samples", type=int, default=32_000)
    sub.add_parser("ffhq-template", help="measure where FFHQ alignment puts YuNet's landmarks (seconds)")
    cip = sub.add_parser(
        "cipher", help="train a learned cipher on the dcgan64 codec (ifadit 12 min, riddle 16, facersa 17, fit 21)"
    )
    cip.add_argument("--name", required=True, help="the cipher: ifadit, riddle, facersa or fit")
    cip.add_argument("--out", type=Path, help="default: cipher_worker/ciphers/weights/<name>_dcgan64.pt")
    cip.add_argument("--seed", type=int, default=0)
    cip.add_argument("--latent-steps", type=int)
    cip.add_argument("--sface-steps", type=int)
    # one thread: on a busy 2-core machine two threads wait on each other far longer than they gain
    cip.add_argument("--threads", type=int, default=1, help="torch threads (fixed: the result depends on it)")
    args = parser.parse_args(argv)
    if args.command == "ffhq-template":
        from .ffhq_template import main as ffhq_template

        ffhq_template()
        return 0
    torch.set_num_threads(getattr(args, "threads", 2))  # fixed, so a rerun elsewhere gives the same weights

    if args.command == "cipher":
        from .cipher import default_config, train_cipher

        overrides = {k: v for k in ("latent_steps", "sface_steps") if (v := getattr(args, k)) is not None}
        train_cipher(args.name, args.out, default_config(args.name, seed=args.seed, **overrides))
    elif args.command == "encoder":
        from .encoder import EncoderTrainConfig, train_encoder

        overrides = {
            k: v for k in ("regress_steps", "finetune_steps", "cached_samples") if (v := getattr(args, k)) is not None
        }
        train_encoder(args.out, EncoderTrainConfig(seed=args.seed, **overrides))
    elif args.command == "appearance":
        from .appearance import fit_appearance

        fit_appearance(args.out, seed=args.seed, samples=args.samples)
    else:
        from .attributes import fit_attributes

        fit_attributes(args.out, seed=args.seed, samples=args.samples)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
