"""Headless Chromium driven by Selenium, for the tests of the chat page.

Chromium and its driver are the Debian packages `chromium` and `chromium-driver`
(`scripts/setup.sh --servers` installs them). Selenium is given both paths, so it
never looks for a browser of its own to download.
"""

from __future__ import annotations

from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def start_chromium(log_path: Path) -> webdriver.Chrome:
    """A headless Chromium that runs as root in a container."""
    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",  # a container's /dev/shm is small
        "--window-size=1000,760",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER, log_output=str(log_path)))
