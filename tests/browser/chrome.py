"""Headless Chromium for the browser tests: one configuration, a viewport per width."""

from __future__ import annotations

import os
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDTH = 1280
PAGE_TIMEOUT_S = 60


def missing_chromium() -> str | None:
    """Why the browser cannot start here (``None`` when it can)."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} not found: install the Debian package {package} to run the browser test"
    return None


def new_chrome():
    """A headless Chromium, WIDTH px wide, that can reach only 127.0.0.1."""
    # Selenium Manager must not try to download a driver: the paths are given explicitly.
    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--window-size={WIDTH},900",
        # Only the local server resolves: external loads fail at once, online or not.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    chrome.set_page_load_timeout(PAGE_TIMEOUT_S)
    chrome.set_script_timeout(PAGE_TIMEOUT_S)
    return chrome


def set_viewport(chrome, width: int, height: int = 900) -> None:
    """Lay pages out ``width`` CSS px wide; below the laptop width as a phone (viewport meta)."""
    chrome.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < WIDTH},
    )
