"""What a person does in the browser: log in through the IAM login page, pick a profile, use JupyterLab."""

from __future__ import annotations

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from support.browser import screenshot


def wait(driver: webdriver.Chrome, timeout: float = 60) -> WebDriverWait:
    """A wait whose condition is tried again when an element it found went stale: our JupyterLab sidebar re-draws
    a job's row whenever a poll finds the job changed (its phase, its place in the queue), so an element found a
    moment ago may be gone by the next call on it; the next try finds its successor."""
    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,))


def login(driver: webdriver.Chrome, base_url: str, username: str, password: str = "demo",
          shot: str | None = None) -> None:
    """From the hub's login page through the OIDC provider's login form and back to the hub."""
    driver.get(f"{base_url}/hub/login")
    wait(driver).until(ec.element_to_be_clickable((By.PARTIAL_LINK_TEXT, "Sign in with"))).click()
    user_box = wait(driver).until(ec.presence_of_element_located((By.ID, "username")))
    if shot:
        screenshot(driver, shot)
    user_box.clear()
    user_box.send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver).until(lambda d: d.current_url.startswith(base_url))


def run_cell(driver: webdriver.Chrome, code: str, expect: str, timeout: float = 120, until: str = "") -> str:
    """Open a new Python notebook from the JupyterLab launcher, run `code` in it and return the first output
    that starts with `expect` (an error's traceback quotes the code, so a match anywhere would mislead) and,
    for a cell that prints as it goes (its stream outputs merge into one), also contains `until`."""
    w = wait(driver, timeout)
    w.until(ec.element_to_be_clickable(
        (By.CSS_SELECTOR, '.jp-LauncherCard[data-category="Notebook"]'))).click()
    editor = w.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell .cm-content")))
    # Run only once the new notebook's kernel is up: a cell run while its session has no kernel yet is dropped
    # by JupyterLab (the cell moves on, nothing executes).
    w.until(ec.presence_of_element_located(
        (By.XPATH, "//*[contains(@class, 'jp-StatusBar')]//*[contains(text(), '| Idle')]")))
    editor.click()
    editor.send_keys(code)
    editor.send_keys(Keys.SHIFT, Keys.ENTER)
    out = w.until(lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
                                  if (e.text.startswith(expect) and until in e.text)
                                  or "Traceback" in e.text or "Error" in e.text), None))
    if not out.text.startswith(expect):
        raise AssertionError(f"the cell failed:\n{out.text}")
    return str(out.text)
