"""Open reports in the system's headless Chromium through Selenium (tests, load-time benchmark,
README screenshot).

Selenium is pointed at Debian's ``chromium`` and ``chromedriver``, so Selenium Manager never
downloads a browser.  WebGL (the 3D viewer) runs on SwiftShader, Chromium's software renderer.
Needs the ``test`` extra (selenium) and the ``chromium chromium-driver`` packages.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser")
ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",  # CI runs as root
    "--disable-dev-shm-usage",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--disable-background-networking",
    "--window-size=1500,1100",
)


def find_chromium() -> tuple[str, str] | None:
    """(browser, driver) paths of the system's Chromium, or None."""
    browser = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def start(download_dir: str | Path | None = None):
    """A headless Chromium WebDriver that records the console and saves downloads to a folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    if found is None:
        raise RuntimeError("no system Chromium: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for argument in ARGUMENTS:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if download_dir is not None:
        options.add_experimental_option(
            "prefs", {"download.default_directory": str(download_dir), "download.prompt_for_download": False}
        )
    return webdriver.Chrome(service=Service(found[1]), options=options)


def open_report(driver, path: str | Path, timeout: float = 60.0) -> float:
    """Load a report and wait until its script says it is ready; return the seconds from the
    start of navigation to ready, as the page measured them (``performance.now()``)."""
    driver.get(Path(path).resolve().as_uri())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready = driver.execute_script(
            "const root = document.documentElement; return root.dataset.ready === 'true' ? Number(root.dataset.readyMs) : null"
        )
        failed = driver.execute_script("return document.getElementById('status').className === 'error'")
        if failed:
            raise RuntimeError(driver.find_element("id", "status").text)
        if ready is not None:
            return ready / 1000
        time.sleep(0.05)
    raise TimeoutError(f"{path}: not ready after {timeout} s")
