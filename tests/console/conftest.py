"""Fixtures for the console tested as its users get it (see console_harness.py): one session-wide
site (users, PAM service, daemon, console as its own user) and one headless Chromium.

Skips, saying why, unless root and unless chromium, chromedriver, openssl and the user tools are
installed.
"""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import console_harness as h  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TOOLS = ("useradd", "userdel", "groupadd", "groupdel", "chpasswd", "setpriv", "runuser", "openssl", "ip")


def pytest_configure(config: pytest.Config) -> None:
    """This file is a second module named ``conftest`` (pytest drops the first from sys.modules to
    import it): put tests/conftest.py back, so that ``from conftest import ...`` in the test files
    collected after this directory finds what it always found."""
    top = config.pluginmanager.get_plugin(str(Path(__file__).resolve().parents[1] / "conftest.py"))
    if top is not None:
        sys.modules["conftest"] = top


def needs_browser_site() -> None:
    if os.geteuid() != 0:
        pytest.skip("the console tests create Unix users with passwords and a PAM service: needs root")
    for tool in TOOLS:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian package; `make deps` installs it as root)")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.skip(f"{path} is missing (apt-get install {package})")
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip("selenium is not installed in the venv (pip install selenium)")


@pytest.fixture(scope="session")
def console_site() -> Iterator[h.Site]:
    needs_browser_site()
    from conftest import python_for  # tests/conftest.py

    base = h.new_base()
    pam = people = daemon = console = None
    try:
        people = h.People.create()
        pam = h.PamService()
        port = h.free_port()
        config = h.write_site(base, port)
        h.make_certificate(base)
        recordings = h.fill_store(config)
        python = python_for(h.CONSOLE_USER)
        daemon = h.Daemon(config, base / "daemon.log")
        console = h.ConsoleProcess(python, config, port, base / "console.log")
        yield h.Site(base, config, people, daemon, console, python, recordings, [base / "console.log"])
    finally:
        if console is not None:
            console.stop()
        if daemon is not None:
            daemon.stop()
        if pam is not None:
            pam.remove()
        h.remove_people()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def browser(console_site: h.Site) -> Iterator[object]:
    """Headless Chromium with a fresh profile, 1280x900, downloads into a folder of the test's."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = console_site.base / "chromium-profile"
    downloads = console_site.base / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--ignore-certificate-errors", "--disable-gpu",
                "--autoplay-policy=no-user-gesture-required", "--disable-dev-shm-usage", "--window-size=1280,900",
                f"--user-data-dir={profile}", "--lang=ja", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False,
                                              "intl.accept_languages": "ja"})
    service = Service(CHROMEDRIVER, log_output=str(console_site.base / "chromedriver.log"),
                      env={**os.environ, "LANGUAGE": "ja", "LANG": "ja_JP.UTF-8", "TZ": "Asia/Tokyo"})  # a Japanese desktop
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_window_size(1280, 900)
    # The page itself 1280x900 (the window's frame would take some of it): what the screenshots show.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False})
    driver.set_page_load_timeout(30)
    driver.downloads = downloads  # type: ignore[attr-defined]
    try:
        driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    except Exception:  # noqa: BLE001  (older drivers: the prefs above do it)
        pass
    try:
        yield driver
    finally:
        driver.quit()
