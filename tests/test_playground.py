"""The playground page in headless Chromium (Debian's package, driven by Selenium and chromium-driver)."""
from __future__ import annotations

import shutil

import pytest

from engines.provider import served_models
from helpers import exact_cache, new_api_key, semantic_cache

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


def test_with_api_keys_on_the_page_sends_the_key_and_lists_only_the_callers_jobs(keyed_live_server, browser):
    import requests
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    key, _ = new_api_key("playground tenant")
    other_key, _ = new_api_key("another tenant")
    other = requests.post(f"{keyed_live_server}/v1/jobs", json={"prompt": "Another tenant's question", "max_tokens": 1},
                          headers={"Authorization": f"Bearer {other_key}"}, timeout=30)
    assert other.status_code in (200, 202), other.text

    browser.get(f"{keyed_live_server}/")
    field = browser.find_element(By.ID, "api-key")
    assert field.get_attribute("type") == "password"
    assert browser.find_element(By.CSS_SELECTOR, 'label[for="api-key"]').text == "API key"
    assert not field.get_attribute("name"), "a named field would put the key into a form's URL"
    assert text_of(browser, "recent-title") == "Your recent jobs"

    # Keyboard only: the key field comes before the prompt; Tab reaches both.
    tab_until(browser, "api-key")
    ActionChains(browser).send_keys(key).perform()
    tab_until(browser, "prompt")
    keys = ActionChains(browser).send_keys("What is the capital of France?", Keys.TAB, Keys.ARROW_RIGHT)  # small
    keys.send_keys(Keys.TAB).key_down(Keys.CONTROL).send_keys("a").key_up(Keys.CONTROL).send_keys("8", Keys.ENTER)
    keys.perform()  # at most 8 tokens, sent with Enter

    status = browser.find_element(By.ID, "status")
    WebDriverWait(browser, 240).until(lambda d: status.get_attribute("data-state") in ("done", "error"))
    assert status.get_attribute("data-state") == "done", status.text  # the stream, fetched with the key
    assert text_of(browser, "answer")
    assert text_of(browser, "key-message") == ""

    job_id = text_of(browser, "job-id")
    badge = f'#recent-list [data-job-id="{job_id}"] .badge'
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, badge)
                                     and d.find_element(By.CSS_SELECTOR, badge).text == "succeeded")
    listed = [e.get_attribute("data-job-id") for e in browser.find_elements(By.CSS_SELECTOR, "#recent-list button")]
    assert other.json()["id"] not in listed, "the list shows another key's job"

    # The key lives in sessionStorage only: not in localStorage, a cookie or the address.
    stored = browser.execute_script(
        "return {session: sessionStorage.getItem('playground.apiKey'), local: JSON.stringify({...localStorage}),"
        " cookie: document.cookie, href: location.href}")
    assert stored["session"] == key
    for place in ("local", "cookie", "href"):
        assert key not in stored[place], place

    # A reload in the same tab keeps the key and lists the job again.
    browser.refresh()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, badge))
    assert browser.find_element(By.ID, "api-key").get_attribute("value") == key


def test_a_wrong_api_key_shows_the_401_next_to_the_key_field(keyed_live_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{keyed_live_server}/")
    browser.find_element(By.ID, "api-key").send_keys("llmq_not-a-key")
    prompt = browser.find_element(By.ID, "prompt")
    prompt.send_keys("What is the capital of France?", Keys.ENTER)

    message = browser.find_element(By.ID, "key-message")
    WebDriverWait(browser, 30).until(lambda d: message.text)
    assert "refused (401)" in message.text and "invalid API key" in message.text, message.text
    assert message.get_attribute("role") == "alert"
    field = browser.find_element(By.ID, "api-key")
    assert field.get_attribute("aria-invalid") == "true"
    assert "key-message" in field.get_attribute("aria-describedby").split()
    assert browser.switch_to.active_element == field, "a refused key sends the focus back to the key field"
    assert text_of(browser, "job-id") == "none yet"
    assert browser.find_element(By.ID, "send").is_enabled()


def test_with_api_keys_off_there_is_no_key_field(live_server, browser):
    from selenium.webdriver.common.by import By

    browser.get(f"{live_server}/")
    assert browser.find_elements(By.ID, "api-key") == []
    assert text_of(browser, "recent-title") == "Recent jobs"
