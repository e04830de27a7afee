"""The web playground end to end in headless Chromium (Debian's chromium + chromium-driver, driven by selenium):
load the page, enter the API key, move a slider, send a prompt, watch the answer stream in, and check that what
each panel shows is what the policy decodes at that panel's weights. The screenshot is kept in
``test-artifacts/playground.png``."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from polyalign.interface import GenerationConfig
from polyalign.serve import Limits, Served
from tests.serve_live import KEY, SlowScheduler, live_server, tiny_policy

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PROMPT = "tell me a story about a happy cat"


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver; .ci/run does)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def panel(driver, name):
    return driver.find_element(By.ID, f"panel-{name}")


def weights_sent(driver, name) -> list[float]:
    text = panel(driver, name).find_element(By.CLASS_NAME, "sent").text  # "sends: terse 0.85, warm 0.25"
    return [float(part.split()[-1]) for part in text.removeprefix("sends: ").split(",")]


def test_the_playground_streams_each_weightings_answer(browser, tiny_models, tmp_path):
    policy = tiny_policy(tiny_models[1])
    scheduler = SlowScheduler(policy, 8, 8, "tiny")
    scheduler.delay = 0.02  # long enough for the page to show a partial answer
    wait = WebDriverWait(browser, 30)
    with live_server([Served("tiny", policy, scheduler, "tiny MOD")], Limits(max_tokens=64)) as live:
        browser.get(f"{live.url}/")
        key = wait.until(lambda d: d.find_element(By.ID, "api-key") if d.find_element(By.ID, "key-box").is_displayed()
                         else None)
        key.send_keys(KEY, Keys.TAB)  # the page asks for the key after the server's 401
        wait.until(lambda d: "steers terse, warm" in d.find_element(By.ID, "status").text)
        slider = panel(browser, "a").find_element(By.CSS_SELECTOR, "input[data-objective=terse]")
        before = weights_sent(browser, "a")
        browser.execute_script("arguments[0].focus()", slider)  # a click would jump it to where it lands
        for _ in range(3):
            slider.send_keys(Keys.ARROW_RIGHT)
        moved = weights_sent(browser, "a")
        assert moved[0] > before[0] and moved[1] == before[1]
        tokens = browser.find_element(By.ID, "max-tokens")
        tokens.clear()
        tokens.send_keys("40")
        browser.find_element(By.ID, "prompt").send_keys(PROMPT)
        browser.find_element(By.ID, "send").click()
        answer_a = wait.until(lambda d: panel(d, "a").find_element(By.CSS_SELECTOR, ".msg.assistant"))
        partial = wait.until(lambda d: (t := answer_a.find_element(By.CLASS_NAME, "text").get_attribute("textContent"))
                             and "streaming" in answer_a.get_attribute("class") and t)
        wait.until(lambda d: all(m.get_attribute("data-done") == "true"
                                 for m in d.find_elements(By.CSS_SELECTOR, ".msg.assistant")) and
                   len(d.find_elements(By.CSS_SELECTOR, ".msg.assistant")) == 2)
        time.sleep(0.2)
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "playground.png"))
        browser.save_screenshot(str(tmp_path / "playground.png"))
        shown = {}
        for name in ("a", "b"):
            shown[name] = panel(browser, name).find_element(By.CSS_SELECTOR, ".msg.assistant .text").get_attribute(
                "textContent")
            (expected,) = policy.generate(PROMPT, weights_sent(browser, name),
                                          config=GenerationConfig(max_new_tokens=40))
            assert shown[name] == expected.text
            meta = panel(browser, name).find_element(By.CSS_SELECTOR, ".msg.assistant .meta").text
            assert meta == "40 tokens, finish: length"
        assert shown["a"] != shown["b"]
        assert shown["a"].startswith(partial) and len(partial) < len(shown["a"])  # it was shown while streaming
    assert (ARTIFACTS / "playground.png").stat().st_size > 10_000
