"""In Chromium: the countdown on the hub's home page runs and turns into a warning, and Extend works."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lifetimes_harness import LifetimesHub
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from support.browser import chromium, screenshot

pytestmark = [pytest.mark.slow, pytest.mark.browser]


@pytest.fixture
def driver() -> Iterator[webdriver.Chrome]:
    d = chromium()
    yield d
    d.quit()


def test_countdown_warns_and_extend_moves_the_end(hub: LifetimesHub, driver: webdriver.Chrome) -> None:
    wait = WebDriverWait(driver, 40)
    driver.get(f"{hub.url}/hub/login?next=%2Fhub%2Fhome")
    driver.find_element(By.ID, "username_input").send_keys("ivan")
    driver.find_element(By.ID, "password_input").send_keys("x")
    driver.find_element(By.ID, "login_submit").click()
    wait.until(lambda d: "/hub/home" in d.current_url)
    hub.start_server("ivan", "short")
    driver.get(f"{hub.url}/hub/home")

    box = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".aifacility-session")))
    first = box.find_element(By.CLASS_NAME, "aifacility-message").text
    wait.until(lambda d: box.find_element(By.CLASS_NAME, "aifacility-message").text != first)  # it counts
    # the page turns the notice into a warning by itself, without a reload
    wait.until(lambda d: "alert-warning" in (box.get_attribute("class") or ""))
    assert box.get_attribute("role") == "alert"
    screenshot(driver, "lifetimes-home-warning")

    box.find_element(By.CLASS_NAME, "aifacility-extend").click()  # OAuth to the service, no consent page
    button = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button.extend")))
    hours = driver.find_element(By.NAME, "hours")
    hours.clear()
    hours.send_keys("0.005")
    button.click()
    notice = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".notice"))).text
    assert notice.startswith("Extended: the session now ends at")
    screenshot(driver, "lifetimes-extended")
    hub.api("DELETE", "/users/ivan/server")
