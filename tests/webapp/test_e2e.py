"""Stories 1–2 in a real browser: headless Chromium drives the product as a person would —
sign up, create an album, upload several photos, watch them finish live, reload, log out.

The stack is the real one: uvicorn serving webapp.asgi, a Celery worker process, Redis
(database 14) and the test database. Chromium and ChromeDriver come from Debian
(``apt-get install chromium chromium-driver``; .ci/run installs them). Without them these
tests are skipped on a developer's machine and fail in CI.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.db import connection

from .conftest import ROOT, WAIT, Worker, database_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

DATA = ROOT / "tests" / "data"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def fresh_redis(redis_db: redis.Redis) -> redis.Redis:
    # the running worker's queue bindings live in this database: no per-test flush
    return redis_db


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def web(worker: Worker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """uvicorn serving the product on a free port, sharing the worker's database and media."""
    port = _free_port()
    log = tmp_path_factory.mktemp("web") / "web.log"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "DATABASE_URL": database_url(connection.settings_dict),
        "MEDIA_ROOT": str(worker.media_root),
        "ALLOWED_HOSTS": "127.0.0.1",
    }
    argv = [sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "--lifespan", "off"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the web server did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium and chromium-driver (see .ci/run)")
        pytest.skip("headless Chromium is not installed: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def wait_for(predicate, timeout: float = 30.0, what: str = "the page") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def fill(driver, fields: dict[str, str]) -> None:
    from selenium.webdriver.common.by import By

    for name, value in fields.items():
        element = driver.find_element(By.NAME, name)
        element.clear()
        element.send_keys(value)


def tile_states(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [t.get_attribute("data-status") or "" for t in driver.find_elements(By.CSS_SELECTOR, "#photo-grid .tile")]


def test_sign_up_create_an_album_upload_and_watch_photos_finish(web: str, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(f"{web}/accounts/signup/")
    fill(driver, {"username": "grandma", "password1": "a-long-family-secret", "password2": "a-long-family-secret"})
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait_for(lambda: "grandma" in driver.find_element(By.CSS_SELECTOR, ".who").text, what="the signed-in header")

    driver.get(f"{web}/albums/new/")
    fill(
        driver,
        {"name": "Summer 2026", "passphrase": "our summer passphrase", "passphrase_again": "our summer passphrase"},
    )
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait_for(lambda: driver.find_elements(By.ID, "photo-input"), what="the album page")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Summer 2026"

    photos = [DATA / "person_a_2.jpg", DATA / "impostor_2.jpg"]
    driver.find_element(By.ID, "photo-input").send_keys("\n".join(str(p) for p in photos))
    # the grid fills in live as the worker finishes each photo (pushed over the websocket)
    wait_for(lambda: tile_states(driver) == ["done", "done"], timeout=WAIT, what="both photos to be done")
    thumbnails = driver.find_elements(By.CSS_SELECTOR, "#photo-grid .tile img")
    assert len(thumbnails) == 2
    assert all(driver.execute_script("return arguments[0].naturalWidth", img) > 0 for img in thumbnails)

    driver.refresh()  # a reload shows the same state, from the database
    wait_for(lambda: tile_states(driver) == ["done", "done"], what="the reloaded grid")
    driver.save_screenshot(str(tmp_path / "album.png"))

    driver.find_element(By.CSS_SELECTOR, ".site-header form button").click()
    wait_for(lambda: driver.find_elements(By.LINK_TEXT, "Log in"), what="the logged-out header")
