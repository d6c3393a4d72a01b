"""The house rules a newcomer relies on: imports point one way, the web process loads no model,
and the development tools stay out of the product."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.helpers import ROOT

# What the web process serves: the ASGI app, every page of the URL conf and every websocket route.
WEB_PROCESS = """
import sys
import webapp.asgi
from django.urls import get_resolver
import webapp.routing
get_resolver().url_patterns  # imports every view module
print(" ".join(m for m in ("torch", "cv2", "cipher_worker.api", "cipher_worker.codecs") if m in sys.modules))
"""


def test_the_import_rules_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout


def test_the_web_process_never_imports_torch_opencv_or_the_codecs() -> None:
    env = os.environ | {"DJANGO_SETTINGS_MODULE": "webapp.settings", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", WEB_PROCESS], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == "", f"the web process imported {run.stdout.strip()}"


def test_the_wheel_ships_the_product_and_not_the_lab() -> None:
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert found["include"] == ["cipher_worker*"]
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "COPY cipher_worker" in dockerfile and "COPY lab" not in dockerfile


def test_the_pre_commit_hooks_are_a_valid_configuration() -> None:
    pre_commit = Path(sys.executable).with_name("pre-commit")
    run = subprocess.run([str(pre_commit), "validate-config"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
