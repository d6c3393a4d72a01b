"""Which files a many-photo CLI command reads and writes.

Inputs are files as given and folders searched (recursively, in name order) for JPEG, PNG and
WebP files; each output goes into the output folder under the name it had (below the folder it
was found in, for a folder's photos). Nothing is ever written over an input or over another
output: such a pair is refused before any work starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


@dataclass(frozen=True)
class Job:
    input: Path
    output: Path


def plan(inputs: Sequence[Path], out_dir: Path, suffix: str | None = None) -> list[Job]:
    """One job per photo among ``inputs``, its output in ``out_dir`` (with ``suffix`` when given,
    e.g. ``.png``). BadInput for a missing input, a folder with no photos, or a clash."""
    jobs: list[Job] = []
    planned: dict[Path, Path] = {}
    for given in inputs:
        found = list(_photos(given))
        if not found:
            raise BadInput(f"{given} holds no .jpg, .png or .webp photos")
        for source, name in found:
            target = out_dir / (name.with_suffix(suffix) if suffix else name)
            key = target.resolve()
            if key == source.resolve():
                raise BadInput(f"{source} would be written over; choose another --out-dir")
            if key in planned:
                raise BadInput(f"{source} and {planned[key]} would both be written to {target}")
            planned[key] = source
            jobs.append(Job(source, target))
    return jobs


def _photos(given: Path) -> Iterator[tuple[Path, Path]]:
    """(path, name relative to the output folder) for each photo ``given`` names."""
    if given.is_dir():
        for path in sorted(given.rglob("*")):
            if path.is_file() and path.suffix.lower() in PHOTO_SUFFIXES:
                yield path, path.relative_to(given)
    elif given.exists():
        yield given, Path(given.name)
    else:
        raise BadInput(f"{given} does not exist")
