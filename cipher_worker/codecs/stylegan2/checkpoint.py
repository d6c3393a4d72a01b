"""Reading deployer-supplied checkpoints safely, with errors that say what is wrong.

Checkpoints are unpickled with ``weights_only=True`` (tensors, containers and primitives
only), so a hostile file cannot run code; the one non-tensor object the formats we read
contain is the ``argparse.Namespace`` of rosinality training checkpoints, allowed by name.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from ...errors import BadCheckpoint


def read_checkpoint(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """Load the torch checkpoint at ``path`` (a dict) without executing anything in it.

    ``what`` names the file in errors ("StyleGAN2 checkpoint", "e4e/pSp checkpoint")."""
    path = Path(path)
    if not path.is_file():
        raise BadCheckpoint(f"{what} {path} does not exist")
    if path.stat().st_size == 0:
        raise BadCheckpoint(f"{what} {path} is empty")
    mmap = zipfile.is_zipfile(path)  # the zip format can be memory-mapped: big files load lazily
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises many types for the same thing: not a loadable checkpoint
        # torch's messages run on for lines; the first sentence says what happened
        first_line = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise BadCheckpoint(
            f"{what} {path} cannot be read (truncated or not a torch checkpoint): {first_line}"
        ) from None
    if not isinstance(data, dict):
        raise BadCheckpoint(f"{what} {path} holds a {type(data).__name__}, not a checkpoint dict")
    return data


def require(data: Mapping[str, Any], key: str, what: str, path: str | os.PathLike[str]) -> Any:
    """``data[key]``, or a clear error naming the keys the checkpoint does have."""
    if key not in data:
        have = ", ".join(sorted(map(str, data))[:8]) or "nothing"
        raise BadCheckpoint(f"{what} {path} has no {key!r} (it has: {have})")
    return data[key]


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], what: str) -> None:
    """``module.load_state_dict(state)`` with every key and shape checked, and one readable
    error naming the first few missing, unexpected and mis-shaped tensors."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            problems.append(f"{label}: {', '.join(names[:3])}{more}")
    if problems:
        raise BadCheckpoint(f"{what} does not match the expected layout; " + "; ".join(problems))
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})


def sub_state(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix`` ("encoder." …), with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through a temporary file in its directory, renamed into place: readers and
    concurrent writers never see half a file, and a failure (an OSError, re-raised) leaves none."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
