"""Login round trip in headless Chromium, from the hub's login page to the spawn page: through the IAM
authenticator and the embedded OIDC provider (two redirects, a login form at the provider, code exchange,
ID token check, userinfo), against the same hub with JupyterHub's stock DummyAuthenticator form, in one run.
Prints medians and their ratio; the OIDC round trip is expected to cost a few page loads more."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the support package (auth_harness uses it)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "auth"))

from auth_harness import LocalHub, free_port
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from aifacility.oidc import EmbeddedOIDCProvider

ROUNDS = 8


def chromium(profile: str) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--user-data-dir={profile}"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)


def at_spawn_page(driver: webdriver.Chrome, hub: LocalHub) -> None:
    WebDriverWait(driver, 60).until(
        lambda d: urlparse(d.current_url).port == hub.port and urlparse(d.current_url).path == "/hub/spawn"
        and d.find_elements(By.ID, "spawn_form"))


def iam_login(driver: webdriver.Chrome, hub: LocalHub, user: str) -> float:
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.get(f"{hub.url}/hub/login")
    start = time.perf_counter()
    driver.find_element(By.PARTIAL_LINK_TEXT, "Sign in with").click()
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "login-submit"))
    driver.find_element(By.ID, "username").send_keys(user)
    driver.find_element(By.ID, "password").send_keys("demo")
    driver.find_element(By.ID, "login-submit").click()
    at_spawn_page(driver, hub)
    return time.perf_counter() - start


def form_login(driver: webdriver.Chrome, hub: LocalHub, user: str) -> float:
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.get(f"{hub.url}/hub/login")
    start = time.perf_counter()
    driver.find_element(By.ID, "username_input").send_keys(user)
    driver.find_element(By.ID, "password_input").send_keys("demo")
    driver.find_element(By.ID, "login_submit").click()
    at_spawn_page(driver, hub)
    return time.perf_counter() - start


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="bench-login-") as tmp:
        base = Path(tmp)
        port = free_port()
        provider = EmbeddedOIDCProvider(base / "oidc", redirect_uris=[f"http://127.0.0.1:{port}/hub/oauth_callback"])
        provider.start()
        iam_hub = LocalHub(base / "iam", provider=provider, port=port)
        dummy_hub = LocalHub(base / "dummy")
        driver = chromium(str(base / "chromium"))
        try:
            iam_hub.start()
            dummy_hub.start()
            iam_login(driver, iam_hub, "alice")  # warm-up: imports, discovery, JWKS, browser caches
            form_login(driver, dummy_hub, "alice")
            iam, dummy = [], []
            for i in range(ROUNDS):  # interleaved, so that machine noise hits both alike
                dummy.append(form_login(driver, dummy_hub, "alice"))
                iam.append(iam_login(driver, iam_hub, ("alice", "bob", "dana")[i % 3]))
        finally:
            driver.quit()
            iam_hub.stop()
            dummy_hub.stop()
            provider.stop()
    m_iam, m_dummy = statistics.median(iam), statistics.median(dummy)
    print(f"login page -> spawn page, {ROUNDS} rounds each, headless Chromium")
    print(f"  DummyAuthenticator form (baseline): median {m_dummy * 1000:7.0f} ms  "
          f"(min {min(dummy) * 1000:.0f}, max {max(dummy) * 1000:.0f})")
    print(f"  IAM via embedded OIDC provider:     median {m_iam * 1000:7.0f} ms  "
          f"(min {min(iam) * 1000:.0f}, max {max(iam) * 1000:.0f})")
    print(f"  ratio IAM / baseline: {m_iam / m_dummy:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
