"""Stories 1–4 in a real browser: headless Chromium drives the product as a person would —
sign up, create an album, upload several photos, watch them finish live, reload, log out; and
share an album with a family member, who brings the real faces back with their own password.

The stack is the real one: uvicorn serving webapp.asgi, a Celery worker process, Redis
(database 14) and the test database. Chromium and ChromeDriver come from Debian
(``apt-get install chromium chromium-driver``; .ci/run installs them). Without them these
tests are skipped on a developer's machine and fail in CI.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.db import connection

from tests.helpers import DATA
from webapp.processes import ChildExited, Supervisor, web_command

from .helpers import WAIT, Worker, database_url

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def fresh_redis(redis_db: redis.Redis) -> redis.Redis:
    # the running worker's queue bindings live in this database: no per-test flush
    return redis_db


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


LOSSLESS = {"VEIL_UNLOCK_FORMAT": "PNG"}  # recovered photos pixel for pixel, so the test can compare them


@pytest.fixture(scope="module")
def worker_env() -> dict[str, str]:
    return LOSSLESS


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
        **LOSSLESS,
    }
    with Supervisor() as supervisor:
        supervisor.start("web", web_command("127.0.0.1", port), env, log=log)
        try:
            supervisor.wait_listening("127.0.0.1", port)
        except ChildExited as exc:
            pytest.fail(f"the web server did not start: {exc}\n{supervisor.tail('web')}")
        yield f"http://127.0.0.1:{port}"


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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # for csp_violations
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


def csp_violations(driver) -> list[str]:
    """What the browser's console said about the Content-Security-Policy since it was last asked."""
    return [entry["message"] for entry in driver.get_log("browser") if "Content Security Policy" in entry["message"]]


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


def texts(driver, selector: str) -> list[str]:
    """The text of every element ``selector`` matches; none (not an error) while a page is still loading."""
    from selenium.webdriver.common.by import By

    return [element.text for element in driver.find_elements(By.CSS_SELECTOR, selector)]


def tile_states(driver) -> list[str]:
    from selenium.webdriver.common.by import By

    return [t.get_attribute("data-status") or "" for t in driver.find_elements(By.CSS_SELECTOR, "#photo-grid .tile")]


def test_sign_up_create_an_album_upload_and_watch_photos_finish(web: str, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(f"{web}/accounts/signup/")
    fill(driver, {"username": "grandma", "password1": "a-long-family-secret", "password2": "a-long-family-secret"})
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait_for(lambda: texts(driver, ".who") == ["grandma"], what="the signed-in header")

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
    # live tiles carry what a reloaded page shows: the file's name and its Delete button
    assert sorted(texts(driver, "#photo-grid .tile-name")) == ["impostor_2.jpg", "person_a_2.jpg"]
    assert texts(driver, "#photo-grid .tile form button") == ["Delete", "Delete"]

    driver.refresh()  # a reload shows the same state, from the database
    wait_for(lambda: tile_states(driver) == ["done", "done"], what="the reloaded grid")
    driver.save_screenshot(str(tmp_path / "album.png"))

    driver.find_element(By.CSS_SELECTOR, ".site-header form button").click()
    wait_for(lambda: driver.find_elements(By.LINK_TEXT, "Log in"), what="the logged-out header")
    assert not csp_violations(driver)


def fetch_bytes(driver, url: str) -> bytes:
    """The bytes behind ``url`` as the page sees them (a blob: URL works only inside the page)."""
    encoded = driver.execute_async_script(
        """
        const [url, done] = arguments;
        fetch(url)
          .then((response) => response.arrayBuffer())
          .then((buffer) => {
            const bytes = new Uint8Array(buffer);
            let text = "";
            for (let i = 0; i < bytes.length; i += 0x8000) {
              text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
            }
            done(btoa(text));
          })
          .catch((error) => done("error: " + error));
        """,
        url,
    )
    assert not encoded.startswith("error: "), f"the page could not fetch {url}: {encoded}"
    return base64.b64decode(encoded)


def test_a_family_member_unlocks_the_real_faces_with_their_password(web: str, browser, tmp_path: Path) -> None:
    import numpy as np
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    from cipher_worker.envelope import Envelope
    from cipher_worker.imageio import decode_image
    from webapp.albums.models import Photo

    driver = browser
    driver.set_script_timeout(60)
    driver.get(f"{web}/")
    driver.delete_all_cookies()  # whoever the last test left signed in, this story starts afresh

    # 1. The owner signs up, makes an album and uploads one photo.
    driver.get(f"{web}/accounts/signup/")
    fill(driver, {"username": "aunt_ruth", "password1": "a-long-family-secret", "password2": "a-long-family-secret"})
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait_for(lambda: texts(driver, ".who") == ["aunt_ruth"], what="the signed-in header")
    driver.get(f"{web}/albums/new/")
    passphrase = "the reunion passphrase"
    fill(driver, {"name": "Reunion", "passphrase": passphrase, "passphrase_again": passphrase})
    driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]").click()
    wait_for(lambda: driver.find_elements(By.ID, "photo-input"), what="the album page")
    original_path = DATA / "person_a_2.jpg"
    driver.find_element(By.ID, "photo-input").send_keys(str(original_path))
    wait_for(lambda: tile_states(driver) == ["done"], timeout=WAIT, what="the photo to be done")

    # 2. On the Sharing page the owner adds "cousin" with a password of their choosing.
    driver.find_element(By.LINK_TEXT, "Sharing").click()
    wait_for(lambda: driver.find_elements(By.ID, "add-recipient"), what="the sharing page")
    cousins_password = "cousin's own long password"
    driver.find_element(By.CSS_SELECTOR, "input[name=password_choice][value=choose]").click()
    wait_for(lambda: driver.find_element(By.NAME, "password").is_displayed(), what="the password field")
    fill(driver, {"name": "cousin", "password": cousins_password, "owner_passphrase": passphrase})
    driver.find_element(By.CSS_SELECTOR, "#add-recipient button[type=submit]").click()
    added = "cousin can now unlock this album with the password you chose."
    wait_for(lambda: added in texts(driver, ".messages .success"), what="the recipient to be added")
    names = [td.text for td in driver.find_elements(By.CSS_SELECTOR, "#recipients tbody tr td:first-child")]
    assert "cousin" in names, names
    share_link = driver.find_element(By.ID, "share-link-input").get_attribute("value") or ""
    assert share_link.startswith(f"{web}/s/"), share_link

    # 3. Someone else, signed in as nobody, opens the link and types a wrong password.
    driver.delete_all_cookies()
    driver.get(share_link)
    wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#photo-grid .tile")) == 1, what="the shared grid")
    tile = driver.find_element(By.CSS_SELECTOR, "#photo-grid .tile")
    photo_id = tile.get_attribute("data-photo-id")
    img = tile.find_element(By.TAG_NAME, "img")
    anonymized_src = img.get_attribute("src") or ""
    assert anonymized_src.startswith(f"{web}/s/"), anonymized_src
    wait_for(lambda: driver.execute_script("return arguments[0].naturalWidth", img) > 0, what="the thumbnail")

    driver.find_element(By.ID, "unlock-open").click()
    dialog = driver.find_element(By.ID, "unlock-dialog")
    wait_for(dialog.is_displayed, what="the unlock dialog")
    Select(driver.find_element(By.ID, "unlock-name")).select_by_visible_text("cousin")
    fill(driver, {"password": "not the cousin's password"})
    driver.find_element(By.ID, "unlock-submit").click()
    error = driver.find_element(By.ID, "unlock-error")
    wait_for(error.is_displayed, timeout=60, what="the wrong-password message")
    assert error.text == "That password does not open this album."
    assert dialog.is_displayed()  # still open, ready for another try
    assert img.get_attribute("src") == anonymized_src
    assert "real" not in (tile.get_attribute("class") or "").split()

    # 4. The right password: the real faces replace the stranger's in place, as a blob: image.
    fill(driver, {"password": cousins_password})
    driver.find_element(By.ID, "unlock-submit").click()
    wait_for(
        lambda: (img.get_attribute("src") or "").startswith("blob:"), timeout=WAIT, what="the recovered real faces"
    )
    wait_for(lambda: not dialog.is_displayed(), what="the dialog to close")
    badge = tile.find_element(By.CSS_SELECTOR, ".real-badge")
    assert badge.is_displayed() and badge.text == "Real faces"
    assert "real" in (tile.get_attribute("class") or "").split()
    status = driver.find_element(By.ID, "unlock-status")
    wait_for(lambda: "Real faces shown on 1 photo" in status.text, what="the finished status")
    assert driver.find_element(By.ID, "unlock-hide").is_displayed()
    assert not driver.find_element(By.ID, "unlock-open").is_displayed()  # one of the two at a time
    driver.save_screenshot(str(tmp_path / "unlocked.png"))

    # The recovered pixels, as the page holds them, against the original upload and the anonymized
    # image, over the face's box (from the photo's envelope; the database is shared). The blob's own
    # bytes (a lossless PNG) are fetched in the page and decoded here, so no canvas colour management
    # gets in the way.
    original = decode_image(original_path.read_bytes()).pixels
    recovered = decode_image(fetch_bytes(driver, img.get_attribute("src") or "")).pixels
    full_anonymized = tile.find_element(By.CSS_SELECTOR, ".tile-image a").get_attribute("href") or ""
    anonymized = decode_image(fetch_bytes(driver, full_anonymized)).pixels
    assert recovered.shape == original.shape == anonymized.shape
    assert driver.execute_script("return arguments[0].naturalWidth", img) == original.shape[1]
    photo = Photo.objects.get(pk=photo_id)
    x0, y0, x1, y1 = Envelope.from_bytes(bytes(photo.envelope)).faces[0].box
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, original.shape[1]), min(y1, original.shape[0])
    assert x1 - x0 > 20 and y1 - y0 > 20, (x0, y0, x1, y1)

    region = (slice(y0, y1), slice(x0, x1))

    def face_difference(pixels: np.ndarray) -> float:
        return float(np.abs(pixels[region].astype(np.int16) - original[region].astype(np.int16)).mean())

    # Not exactly 0: the box's margin that the stranger's face did not touch comes back from the stored
    # (re-encoded JPEG) anonymized image, within a level or two of the original; the touched pixels
    # come back exactly. So: every pixel of the box is the original's or the anonymized image's.
    recovered_error, anonymized_error = face_difference(recovered), face_difference(anonymized)
    assert recovered_error < 1.0, f"the recovered face differs by {recovered_error:.2f} on average"
    assert anonymized_error > 5.0, f"the anonymized face differs by only {anonymized_error:.2f}"
    exact = (recovered[region] == original[region]).all(axis=-1)
    assert (exact | (recovered[region] == anonymized[region]).all(axis=-1)).all()
    assert exact.mean() > 0.5, f"only {exact.mean():.0%} of the face box came back exactly"

    # 5. A reload forgets the real faces: the anonymized album is back.
    driver.refresh()
    wait_for(lambda: len(driver.find_elements(By.CSS_SELECTOR, "#photo-grid .tile")) == 1, what="the reloaded grid")
    images = driver.find_elements(By.CSS_SELECTOR, "#photo-grid .tile img")
    assert [i.get_attribute("src") for i in images] == [anonymized_src]
    assert not driver.find_elements(By.CSS_SELECTOR, "#photo-grid .real-badge, #photo-grid .tile.real")
    assert not driver.find_element(By.ID, "unlock-hide").is_displayed()
    assert driver.find_element(By.ID, "unlock-open").is_displayed()
    assert not csp_violations(driver)
