"""End to end in headless Chromium: log in through the provider's page, land on the spawn page, be refused,
be admin, and keep a session's token fresh after the access token expired."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests
from auth_harness import ACCESS_TOKEN_TTL, LocalHub
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from aifacility.oidc import EmbeddedOIDCProvider

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def browser() -> Iterator[Callable[[], webdriver.Chrome]]:
    """A factory of fresh Chromium instances (each its own profile, so each its own cookies)."""
    drivers: list[webdriver.Chrome] = []
    dirs: list[tempfile.TemporaryDirectory[str]] = []

    def make() -> webdriver.Chrome:
        profile = tempfile.TemporaryDirectory()
        dirs.append(profile)
        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--window-size=1280,900", f"--user-data-dir={profile.name}"):
            opts.add_argument(arg)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
        driver.set_page_load_timeout(60)
        drivers.append(driver)
        return driver

    yield make
    for d in drivers:
        d.quit()
    for p in dirs:
        p.cleanup()


def _browser_login(driver: webdriver.Chrome, hub: LocalHub, username: str, shot: Path | None = None) -> None:
    driver.get(f"{hub.url}/hub/login")
    driver.find_element(By.PARTIAL_LINK_TEXT, "Sign in with INDIGO IAM").click()
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "login-submit")))
    if shot:
        driver.save_screenshot(str(shot))
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys("demo")
    driver.find_element(By.ID, "login-submit").click()
    WebDriverWait(driver, 60).until(lambda d: urlparse(d.current_url).port == hub.port)


def _valid_at_provider(provider: EmbeddedOIDCProvider, token: str) -> bool:
    me = requests.get(f"{provider.issuer}/me", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    return me.status_code == 200


def test_alice_logs_in_spawns_after_expiry_and_her_token_file_is_renewed(
        browser: Callable[[], webdriver.Chrome], hub: LocalHub, provider: EmbeddedOIDCProvider,
        screenshots: Path) -> None:
    driver = browser()
    _browser_login(driver, hub, "alice", screenshots / "login-page.png")
    logged_in_at = time.monotonic()
    WebDriverWait(driver, 30).until(lambda d: urlparse(d.current_url).path == "/hub/spawn")
    assert driver.find_element(By.ID, "profile")
    driver.save_screenshot(str(screenshots / "spawn-page.png"))
    first = hub.api("GET", "/users/alice").json()["auth_state"]["access_token"]

    # Let the access token expire before spawning: the hub must refresh it (refresh_pre_spawn).
    time.sleep(max(0.0, ACCESS_TOKEN_TTL + 1 - (time.monotonic() - logged_in_at)))
    assert not _valid_at_provider(provider, first)
    driver.find_element(By.CSS_SELECTOR, "#spawn_form button[type=submit]").click()
    try:
        model = hub.wait_server("alice")
        assert model["auth_state"]["access_token"] != first
        token_file = hub.token_file("alice")
        deadline = time.monotonic() + 30
        while not token_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        in_session = token_file.read_text().strip()
        assert _valid_at_provider(provider, in_session)

        # The running session renews its token file before the token expires.
        deadline = time.monotonic() + 3 * ACCESS_TOKEN_TTL
        while token_file.read_text().strip() == in_session and time.monotonic() < deadline:
            time.sleep(0.5)
        renewed = token_file.read_text().strip()
        assert renewed != in_session
        assert _valid_at_provider(provider, renewed)
    finally:
        hub.api("DELETE", "/users/alice/server")


def test_eve_sees_why_she_is_refused(browser: Callable[[], webdriver.Chrome], hub: LocalHub,
                                     screenshots: Path) -> None:
    driver = browser()
    _browser_login(driver, hub, "eve")
    page = WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "aifacility-refused")))
    driver.save_screenshot(str(screenshots / "refused-page.png"))
    assert "You cannot use this facility yet" in page.text
    assert "not a member of any group that may use this facility" in page.text
    assert "ask the facility team (aifacility-support@example.org)" in page.text


def test_dana_reaches_the_admin_page(browser: Callable[[], webdriver.Chrome], hub: LocalHub) -> None:
    driver = browser()
    _browser_login(driver, hub, "dana")
    driver.get(f"{hub.url}/hub/admin")
    WebDriverWait(driver, 30).until(ec.presence_of_element_located((By.ID, "react-admin-hook")))
    assert "403" not in driver.title
