"""`python -m cipher_worker` as a person uses it: files in, files out, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cipher_worker.cli import main
from tests.helpers import decode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, group_png) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "group.png").write_bytes(group_png)
    (root / "pass.txt").write_text("correct horse battery staple\n")
    (root / "wrong.txt").write_text("tr0ub4dor&3\n")
    return root


@pytest.fixture(scope="module")
def keyfiles(workdir) -> tuple[Path, Path]:
    key, pub = workdir / "album.key", workdir / "album.pub"
    assert (
        main(["keygen", "--out", str(key), "--public-out", str(pub), "--passphrase-file", str(workdir / "pass.txt")])
        == 0
    )
    return key, pub


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_writes_a_private_key_only_its_owner_can_read(keyfiles):
    key, pub = keyfiles
    assert key.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE" not in pub.read_text()


def test_anonymize_recover_roundtrip_is_exact(capsys, workdir, keyfiles, group_png):
    key, pub = keyfiles
    anon, back = workdir / "anon.png", workdir / "back.png"
    code, out, _ = run(capsys, "anonymize", str(workdir / "group.png"), str(anon), "--public-key", str(pub), "--json")
    assert code == 0
    assert len(json.loads(out)["faces"]) == 3
    code, out, _ = run(
        capsys, "recover", str(anon), str(back), "--key", str(key), "--passphrase-file", str(workdir / "pass.txt")
    )
    assert code == 0 and "recovered 3 face(s)" in out
    assert np.array_equal(decode(back.read_bytes()), decode(group_png))

    code, out, _ = run(capsys, "inspect", str(anon), "--json")
    info = json.loads(out)
    assert code == 0 and info["codec"] == "dcgan64" and info["fidelity"] == "exact" and len(info["faces"]) == 3
    assert "key" not in out.lower().replace("codec", "")


def test_wrong_passphrase_exits_3(capsys, workdir, keyfiles):
    key, pub = keyfiles
    anon = workdir / "anon2.jpg"
    assert run(capsys, "anonymize", str(workdir / "group.png"), str(anon), "--public-key", str(pub))[0] == 0
    code, _, err = run(
        capsys,
        "recover",
        str(anon),
        str(workdir / "x.png"),
        "--key",
        str(key),
        "--passphrase-file",
        str(workdir / "wrong.txt"),
    )
    assert code == 3 and "wrong" in err.lower() and not (workdir / "x.png").exists()


def test_decoy_gives_plausible_faces_and_exit_0(capsys, workdir, keyfiles, group_png):
    key, pub = keyfiles
    anon, decoy = workdir / "anon3.png", workdir / "decoy.png"
    assert run(capsys, "anonymize", str(workdir / "group.png"), str(anon), "--public-key", str(pub))[0] == 0
    code, _, _ = run(
        capsys,
        "recover",
        str(anon),
        str(decoy),
        "--key",
        str(key),
        "--passphrase-file",
        str(workdir / "wrong.txt"),
        "--decoy",
    )
    assert code == 0
    assert not np.array_equal(decode(decoy.read_bytes()), decode(group_png))


def test_bad_input_exits_2_with_one_line(capsys, workdir, keyfiles):
    _, pub = keyfiles
    (workdir / "notes.jpg").write_text("not a photo")
    code, _, err = run(
        capsys, "anonymize", str(workdir / "notes.jpg"), str(workdir / "o.jpg"), "--public-key", str(pub)
    )
    assert code == 2 and err.count("\n") == 1 and "not an image" in err
    code, _, err = run(
        capsys, "anonymize", str(workdir / "missing.jpg"), str(workdir / "o.jpg"), "--public-key", str(pub)
    )
    assert code == 2 and "does not exist" in err
    code, _, err = run(
        capsys, "anonymize", str(workdir / "group.png"), str(workdir / "o.gif"), "--public-key", str(pub)
    )
    assert code == 2 and ".jpg, .png or .webp" in err


def test_eval_and_bench_say_they_run_from_a_checkout(capsys):
    for verb in ("eval", "bench"):
        code, _, err = run(capsys, verb, "--images", "photos/")
        assert code == 2 and f"python -m lab {verb}" in err and err.count("\n") == 1


def test_recover_without_envelope_exits_2(capsys, workdir, keyfiles):
    key, _ = keyfiles
    code, _, err = run(
        capsys,
        "recover",
        str(workdir / "group.png"),
        str(workdir / "o.png"),
        "--key",
        str(key),
        "--passphrase-file",
        str(workdir / "pass.txt"),
    )
    assert code == 2 and "recovery data" in err


def test_real_process_prints_no_traceback(workdir, keyfiles):
    _, pub = keyfiles
    (workdir / "empty.jpg").write_bytes(b"")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "cipher_worker",
            "anonymize",
            str(workdir / "empty.jpg"),
            str(workdir / "o.jpg"),
            "--public-key",
            str(pub),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("veil: ")


def test_many_photos_and_folders_go_to_an_output_folder_past_a_bad_file(capsys, workdir, keyfiles, group_png):
    key, pub = keyfiles
    photos = workdir / "trip"
    (photos / "day 2").mkdir(parents=True)
    (photos / "beach.png").write_bytes(group_png)
    (photos / "day 2" / "dinner.png").write_bytes(group_png)
    (photos / "day 2" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    (photos / "notes.txt").write_text("not a photo, and not picked up")
    single = workdir / "group.png"
    out, back = workdir / "trip-veiled", workdir / "trip-back"

    code, report, err = run(
        capsys, "anonymize", str(photos), str(single), "--out-dir", str(out), "--public-key", str(pub), "--json"
    )
    result = json.loads(report)
    assert code == 2  # one photo failed; the others were all written
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["beach.png", "day 2/dinner.png", "group.png"]
    assert [f["input"] for f in result["failed"]] == [str(photos / "day 2" / "broken.jpg")]
    assert [len(p["faces"]) for p in result["photos"]] == [3, 3, 3]
    assert err.count("\n") == 4 and "[2/4]" in err and "broken.jpg" in err and "Traceback" not in err

    pass_file = str(workdir / "pass.txt")
    code, report, err = run(
        capsys, "recover", str(out), "--out-dir", str(back), "--key", str(key), "--passphrase-file", pass_file
    )
    assert code == 0 and "recover: 3 of 3 photo(s), 9 face(s)" in report
    for name in ("beach.png", "day 2/dinner.png", "group.png"):
        assert np.array_equal(decode((back / name).read_bytes()), decode(group_png))


def test_an_output_folder_never_writes_over_an_input(capsys, workdir, keyfiles):
    _, pub = keyfiles
    folder = workdir / "in-place"
    folder.mkdir()
    (folder / "a.png").write_bytes((workdir / "group.png").read_bytes())
    code, _, err = run(capsys, "anonymize", str(folder), "--out-dir", str(folder), "--public-key", str(pub))
    assert code == 2 and "would be written over" in err
    assert (folder / "a.png").read_bytes() == (workdir / "group.png").read_bytes()


def cli(*argv: str, stdout: int | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    out = subprocess.PIPE if stdout is None else stdout
    return subprocess.run([sys.executable, *argv], stdout=out, stderr=subprocess.PIPE, text=True, env=env)


def test_exact_recovery_loads_no_model(workdir, keyfiles):
    key, pub = keyfiles
    anon = workdir / "for-exact.png"
    assert main(["anonymize", str(workdir / "group.png"), str(anon), "--public-key", str(pub)]) == 0
    script = (
        "import sys; from cipher_worker.cli import main; "
        f"code = main(['recover', {str(anon)!r}, {str(workdir / 'exact-back.png')!r}, '--key', {str(key)!r}, "
        f"'--passphrase-file', {str(workdir / 'pass.txt')!r}]); "
        "print(code, 'torch' in sys.modules, 'cv2' in sys.modules)"
    )
    proc = cli("-c", script)
    assert proc.stdout.splitlines()[-1] == "0 False False", proc.stderr


def test_a_closed_pipe_ends_quietly(workdir, keyfiles):
    _, pub = keyfiles
    anon = workdir / "for-the-pipe.png"
    assert main(["anonymize", str(workdir / "group.png"), str(anon), "--public-key", str(pub)]) == 0
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head` does once it has read enough
    try:
        proc = cli("-m", "cipher_worker", "inspect", str(anon), "--json", stdout=write_end)
    finally:
        os.close(write_end)
    assert proc.returncode == 141 and proc.stderr == ""
