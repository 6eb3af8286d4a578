"""The vetting page in a real headless browser (Chromium + chromedriver from the system, Selenium).

Label ten candidates with the keyboard, kill the server (SIGKILL), start it again, and find all ten
labels. Screenshots of the candidate page and the gallery go to ``$HYBRID_VET_SCREENSHOTS``, else to
tmp_path. The pool is the tiny run's dataset and bundle, or ``$HYBRID_VET_DATASET`` scored by
``$HYBRID_VET_BUNDLE`` (the screenshots in reports/ show a model trained for a few epochs; see README).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")

#: the ten labels, as keys: real, bogus, real of a type (1 sn, 3 variable_star, 5 hostless)
KEYS = ["r", "b", "1", "b", "r", "3", "b", "5", "r", "b"]
EXPECTED = {"r": ("real", None), "b": ("bogus", None), "1": ("real", "sn"), "3": ("real", "variable_star")}
EXPECTED["5"] = ("real", "hostless")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], cwd: Path, url: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    with log.open("ab") as out:  # the server keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "hybrid.cli", "vet", *args], cwd=cwd, env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + 300  # scoring with --bundle comes first
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"hybrid vet exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"hybrid vet did not answer at {url}: {log.read_text()[-2000:]}")


def _gone(element):
    """Wait condition: ``element`` has left the page. Selenium's ``staleness_of`` can itself fail
    while Chromium replaces the document ("Node with given id does not belong to the document");
    any such error means the node is gone."""
    from selenium.common.exceptions import WebDriverException

    def check(_driver) -> bool:
        try:
            element.is_enabled()
        except WebDriverException:
            return True
        return False

    return check


def _images_loaded(driver) -> bool:
    return driver.execute_script("return [...document.images].every(i => i.complete && i.naturalWidth)")


@pytest.fixture
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs chromium and chromedriver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1440,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_label_ten_with_the_keyboard_kill_restart_and_find_them(
    browser, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(os.environ.get("HYBRID_VET_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    dataset = os.environ.get("HYBRID_VET_DATASET")
    bundle = Path(os.environ.get("HYBRID_VET_BUNDLE") or request.getfixturevalue("tiny_bundle"))
    if not dataset:
        dataset = json.loads((bundle.parent / "run" / "metrics.json").read_text())["dataset"]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = [dataset, "--bundle", str(bundle), "--queue", "entropy", "--port", str(port)]
    args += ["--votes", str(tmp_path / "votes.sqlite"), "--work-dir", str(tmp_path / "work")]
    log = tmp_path / "server.log"
    server = _start(args, tmp_path, url, log)
    wait = WebDriverWait(browser, 20)
    try:
        browser.get(url + "/")
        name_box = browser.find_element(By.NAME, "name")
        name_box.clear()
        name_box.send_keys("ann\n")  # the volunteer names themselves (a cookie)
        wait.until(_gone(name_box))
        browser.find_element(By.ID, "start").click()
        labelled: dict[str, str] = {}
        for i, key in enumerate(KEYS):
            current = wait.until(EC.presence_of_element_located((By.ID, "key")))
            name = current.text
            assert name not in labelled
            if i == 0:  # the page as a volunteer first sees it, stamps loaded
                wait.until(_images_loaded)
                browser.save_screenshot(str(shots / "vet_candidate.png"))
            browser.find_element(By.TAG_NAME, "body").send_keys(key)
            wait.until(_gone(current))
            labelled[name] = key
        # undo the tenth label with the keyboard, and label it again
        browser.find_element(By.TAG_NAME, "body").send_keys("u")
        wait.until(EC.text_to_be_present_in_element((By.ID, "key"), name))
        assert "You have not voted" in browser.find_element(By.ID, "keys").text
        old = browser.find_element(By.ID, "key")
        browser.find_element(By.TAG_NAME, "body").send_keys(KEYS[-1])
        wait.until(_gone(old))
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(10)
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/", timeout=2)

    server = _start(args, tmp_path, url, log)
    try:
        browser.get(url + "/votes")
        rows = browser.find_elements(By.CSS_SELECTOR, "tr.vote")
        standing = {}
        for row in rows:
            cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
            if not cells[6]:  # not undone
                standing[cells[1]] = (cells[3], cells[4] or None)
        assert len(rows) == 11  # ten votes and the one undone
        assert standing == {k: EXPECTED[v] for k, v in labelled.items()}
        for name, key in labelled.items():  # each candidate's page shows the volunteer's vote
            browser.get(f"{url}/candidate/{name}")
            label, type_ = EXPECTED[key]
            assert browser.find_element(By.ID, "my-vote").text == label + (f" ({type_})" if type_ else "")
        browser.get(url + "/")
        queue = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "#queue td a")]
        assert queue and not set(queue) & set(labelled)  # the restarted queue goes on where it stopped
        browser.get(url + "/gallery")
        wait.until(_images_loaded)
        assert browser.find_element(By.ID, "completeness").size["width"] > 300
        browser.save_screenshot(str(shots / "vet_gallery.png"))
    finally:
        server.terminate()
        server.wait(10)
