"""The Markdown reports of ``eval`` and ``bench`` (and the web app's bench): one way to write them."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# A latent error below this is float rounding (the torus stores coordinates as 32-bit fixed point,
# a few 1e-10 of their scale): the same face, pixel for pixel near enough.
FLOAT_EXACT = 1e-6


def command_line() -> str:
    """The command that started this process, as a user would type it (``python -m …`` included:
    ``sys.orig_argv`` keeps what ``sys.argv`` replaces with a module's path)."""
    return shlex.join(["python", *sys.orig_argv[1:]])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def save_report(
    result: dict[str, Any], out: Path | None, render: Callable[[dict[str, Any]], str], log: Callable[[str], None]
) -> None:
    """Write ``render(result)`` to ``out`` (if given) and note where in ``result["report"]``."""
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(result))
    result["report"] = str(out)
    log(f"wrote {out}")


def ms(seconds: float) -> str:
    """A duration for a table: one decimal under 10 ms, whole milliseconds above."""
    value = seconds * 1000
    return f"{value:.1f} ms" if abs(value) < 10 else f"{value:.0f} ms"
