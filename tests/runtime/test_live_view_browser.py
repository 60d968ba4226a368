"""`edgeseg run --serve` in a real browser: headless Chromium (Debian's package) driven by Selenium.

It runs the command as a user would, on a looping video of synthetic lesions with the default
model, opens the printed address with its token, and checks that the token moves into an HttpOnly,
SameSite=Strict cookie and out of the address bar, that frames arrive (the picture changes) and the
figures update under the page's Content-Security-Policy, and that the snapshot button gives a PNG.
Set EDGESEG_README_SCREENSHOT=PATH to keep the page's screenshot (docs/live-view.png in the README
is made that way). `.ci/run` installs Chromium where
it can; elsewhere this test skips and says why.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgeseg.core.synthetic import make_sample

CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))), None
)
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="no Chromium with chromedriver here (Debian: apt install chromium chromium-driver; .ci/run does)",
    ),
]


def synthetic_lesion_video(path: Path, samples: int = 12, repeats: int = 3, size: int = 320) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (size, size))
    for index in range(samples):
        image, _ = make_sample(0, index, size)
        for _ in range(repeats):
            writer.write(image)
    writer.release()
    return path


class ServedRun:
    """`edgeseg run --serve 127.0.0.1:0` in a child process, its address with the token read from what it prints."""

    def __init__(self, video: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "edgeseg",
            "run",
            "--source",
            str(video),
            "--loop",
            "--no-show",
            "--serve",
            "127.0.0.1:0",
        ]
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._found = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._found.wait(120):
            self.stop()
            pytest.fail("edgeseg run --serve printed no URL:\n" + "".join(self.lines))
        self.url = re.search(r"(http://\S+\?token=\S+)", "".join(self.lines)).group(1)

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            if "?token=" in line:
                self._found.set()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)  # as Ctrl-C
        return self.process.wait(timeout=60)


def headless_chromium():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,760",
        "--disable-gpu",
    ):
        options.add_argument(argument)
    options.page_load_strategy = "eager"  # an MJPEG image never finishes loading
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER)
    return webdriver.Chrome(options=options, service=service)


def wait_for(condition, timeout: float = 30.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def text_of(browser, element_id: str) -> str:
    return browser.find_element("id", element_id).text


def test_the_live_view_plays_and_its_figures_change_in_chromium(tmp_path: Path) -> None:
    run = ServedRun(synthetic_lesion_video(tmp_path / "lesions.avi"))
    browser = headless_chromium()
    try:
        browser.get(run.url)
        bare = run.url.split("?")[0]
        assert browser.current_url == bare, "the token must leave the address bar"
        cookie = next(cookie for cookie in browser.get_cookies() if cookie["name"].startswith("edgeseg-live-"))
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert browser.execute_script("return document.cookie") == "", "the page's script cannot read the cookie"
        wait_for(lambda: text_of(browser, "state") == "live", what="the page to say live")
        wait_for(
            lambda: browser.execute_script("return document.getElementById('video').naturalWidth") > 0,
            what="the first frame of the stream",
        )
        video = browser.find_element("id", "video")
        pictures, frames, diameters = set(), set(), set()
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and (len(pictures) < 3 or len(diameters) < 2):
            pictures.add(video.screenshot_as_png)
            frames.add(text_of(browser, "frame"))
            diameters.add(text_of(browser, "diameter"))
            time.sleep(0.3)
        assert len(pictures) >= 3, "the picture did not change: frames are not arriving"
        assert len(frames) >= 3, f"the frame number did not update: {frames}"
        assert len({d for d in diameters if d.endswith(" px")}) >= 2, f"the lesion figures did not change: {diameters}"
        assert text_of(browser, "lesion") in ("Lesion found", "No lesion found")
        assert text_of(browser, "viewers") == "1"
        refused = [
            entry["message"] for entry in browser.get_log("browser") if "Content Security Policy" in entry["message"]
        ]
        assert not refused, f"the page's CSP blocked part of the page: {refused}"

        snapshot_url = browser.find_element("id", "snapshot").get_attribute("href")
        assert snapshot_url == bare + "snapshot.png"
        request = urllib.request.Request(snapshot_url, headers={"Cookie": f"{cookie['name']}={cookie['value']}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            png = np.frombuffer(response.read(), np.uint8)
        assert cv2.imdecode(png, cv2.IMREAD_COLOR).shape == (320, 320, 3)

        screenshot = tmp_path / "live-view.png"
        assert browser.save_screenshot(str(screenshot))
        if keep := os.environ.get("EDGESEG_README_SCREENSHOT"):
            shutil.copyfile(screenshot, keep)
    finally:
        browser.quit()
        code = run.stop()
    assert code == 0, "".join(run.lines)
