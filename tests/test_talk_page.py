"""The /talk page in a real headless browser (Debian's chromium): type turns, read the replies off the page."""

from __future__ import annotations

import requests

from voicebot import create_app

from .conftest import app_config
from .support import ServedApp, needs_browser


def talk(browser, text: str) -> None:
    from selenium.webdriver.common.by import By

    box = browser.find_element(By.ID, "text")
    box.send_keys(text)
    browser.find_element(By.ID, "send").click()


def lines(browser, kind: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [li.text for li in browser.find_elements(By.CSS_SELECTOR, f"#transcript li.{kind}")]


def wait_until(browser, check, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, 15, poll_frequency=0.05).until(lambda _: check(), message=what)


@needs_browser
def test_typing_turns_reads_replies_latency_and_the_hang_up(browser, fake_llm):
    served = ServedApp(create_app(app_config(fake_llm)))
    try:
        from selenium.webdriver.common.by import By

        browser.get(served.url + "/talk")
        browser.find_element(By.ID, "start").click()
        wait_until(browser, lambda: lines(browser, "bot") == ["Hello! How can I help you today?"], "the greeting")
        talk(browser, "mk1 where is my order")
        wait_until(browser, lambda: len(lines(browser, "bot")) == 2, "the first reply")
        assert lines(browser, "caller") == ["mk1 where is my order"]
        reply = lines(browser, "bot")[1]
        assert reply.startswith("Heard mk1.") and reply.endswith(" ms")  # the turn's latency beside it
        talk(browser, "thanks, goodbye mk2")
        wait_until(browser, lambda: lines(browser, "action"), "the end-of-call action")
        assert lines(browser, "action") == ["The bot ended the call."]
        assert lines(browser, "bot")[2].startswith("Heard mk1 mk2.")
        assert not browser.find_element(By.ID, "text").is_enabled()
    finally:
        served.stop()


@needs_browser
def test_with_a_token_the_page_needs_it_and_uses_it(browser, fake_llm):
    served = ServedApp(create_app(app_config(fake_llm, WEBHOOK_TOKEN="page-token")))
    try:
        from selenium.webdriver.common.by import By

        assert requests.get(served.url + "/talk", timeout=5).status_code == 401
        browser.get(served.url + "/talk?token=page-token")
        browser.find_element(By.ID, "start").click()
        wait_until(browser, lambda: lines(browser, "bot"), "the greeting")
        talk(browser, "mk7")
        wait_until(browser, lambda: len(lines(browser, "bot")) == 2, "the reply")
        assert lines(browser, "bot")[1].startswith("Heard mk7.")
    finally:
        served.stop()


def test_the_page_can_be_turned_off(fake_llm):
    app = create_app(app_config(fake_llm, TALK_PAGE=False))
    assert app.test_client().get("/talk").status_code == 404
    page = create_app(app_config(fake_llm)).test_client().get("/talk")
    assert page.status_code == 200 and "connect-src 'self'" in page.headers["Content-Security-Policy"]
    assert b"<script src=" not in page.data  # nothing fetched from elsewhere
