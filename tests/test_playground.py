"""The playground page in headless Chromium (Debian's package, driven by Selenium and chromium-driver)."""
from __future__ import annotations

import shutil

import pytest

from engines.provider import served_models
from helpers import exact_cache, semantic_cache

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# Without these Chromium tries network connections that fail here.
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="chromium and chromium-driver are not installed (`make test` installs them when run as root)",
)


@pytest.fixture()
def browser(tmp_path, artifacts_dir):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with both paths given, Selenium never tries to download a browser
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1000"):
        options.add_argument(flag)
    service = Service(CHROMEDRIVER, log_output=str(artifacts_dir / "logs" / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def focused_id(driver) -> str:
    return driver.execute_script("const e = document.activeElement; return e.id || e.textContent.trim();")


def tab_until(driver, element_id: str, limit: int = 10) -> list[str]:
    """Press Tab until `element_id` has focus; the ids (or link texts) visited on the way."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    visited = []
    for _ in range(limit):
        ActionChains(driver).send_keys(Keys.TAB).perform()
        visited.append(focused_id(driver))
        if visited[-1] == element_id:
            return visited
    raise AssertionError(f"Tab never reached #{element_id}: {visited}")


def text_of(driver, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def test_a_prompt_sent_by_keyboard_streams_in_and_fills_the_panels(live_server, browser, artifacts_dir):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    # Earlier tests asked the same question: forget their answers, so this one streams in.
    exact_cache().index.clear()
    semantic_cache().index.clear()
    browser.get(f"{live_server}/")
    assert browser.title == "LLM router playground"
    flower = browser.find_element(By.PARTIAL_LINK_TEXT, "Flower")
    assert flower.get_attribute("href") == "http://127.0.0.1:5555/"

    # Keyboard only: the links come first, then the prompt, the tier, the token limit and Send.
    visited = tab_until(browser, "prompt")
    assert "Flower (workers and tasks)" in visited
    keys = ActionChains(browser)
    keys.send_keys("What is the capital of France?").send_keys(Keys.TAB).send_keys(Keys.ARROW_RIGHT)
    keys.send_keys(Keys.TAB).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).send_keys("8")
    keys.send_keys(Keys.TAB).perform()
    assert focused_id(browser) == "send"
    outline = browser.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid", "keyboard focus must be visible"
    assert browser.find_element(By.CSS_SELECTOR, 'input[name="tier"]:checked').get_attribute("value") == "small"
    # Back to the prompt and send with Enter.
    ActionChains(browser).key_down(Keys.SHIFT).send_keys(Keys.TAB * 3).key_up(Keys.SHIFT).perform()
    assert focused_id(browser) == "prompt"
    ActionChains(browser).send_keys(Keys.ENTER).perform()

    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, 240).until(lambda d: status.get_attribute("data-state") in ("done", "error"))
    assert status.get_attribute("data-state") == "done", status.text

    answer = browser.find_element(By.ID, "answer")
    assert "Paris" in answer.text
    assert int(answer.get_attribute("data-chunks")) >= 2, "the answer did not stream in token by token"
    assert text_of(browser, "route-tier") == "small"
    assert text_of(browser, "route-rule") == "forced"
    assert text_of(browser, "route-intent") not in ("", "—")
    assert float(text_of(browser, "route-score").split()[0]) > 0
    assert text_of(browser, "route-model") == served_models()["small"]
    assert text_of(browser, "route-cached") == "miss"
    for field in ("queue", "routing", "first-token", "total"):
        assert text_of(browser, f"lat-{field}").endswith(" ms"), field

    job_id = text_of(browser, "job-id")
    badge = f'#recent-list [data-job-id="{job_id}"] .badge'
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, badge)
                                     and d.find_element(By.CSS_SELECTOR, badge).text == "succeeded")
    browser.save_screenshot(str(artifacts_dir / "playground.png"))

    # A phone-sized screen: one column, nothing wider than the screen.
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 390, "height": 2000, "deviceScaleFactor": 1, "mobile": True})
    overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a narrow screen"
    answer_box = answer.rect
    routing_box = browser.find_element(By.ID, "routing-panel").rect
    assert routing_box["y"] > answer_box["y"] + answer_box["height"], "the panels stack on a narrow screen"
    browser.save_screenshot(str(artifacts_dir / "playground-narrow.png"))
