"""The chat page with a usage budget: a small line shows what is left, and a used-up budget reads
as a sentence (headless Chromium against the app on the offline upstream)."""

from __future__ import annotations

import pytest

from tests.helpers import call
from tests.test_chat_page import Page, _app, _serve, browser  # noqa: F401 (the browser fixture)


@pytest.fixture(scope="module")
def budget_server(tmp_path_factory, migrated_db):
    server = _serve(_app(tmp_path_factory, migrated_db, BUDGET_TOKENS_PER_DAY="20"))
    yield server
    server.stop()


def test_the_page_shows_the_budget_left_and_says_when_it_is_used_up(browser, budget_server):  # noqa: F811
    page = Page(browser, budget_server.url).open(fresh=True).ready()
    line = page.find("#budget")
    page.wait(lambda: line.is_displayed() and line.text == "Budget left: 20 tokens", "the whole budget")
    page.send("one two three four five")
    page.wait_for_reply(1)
    _, _, used = call("GET", f"{budget_server.url}/api/openai/usage")
    left = max(0, 20 - used["today"]["total_tokens"])
    assert used["budget"]["tokens_per_day"]["remaining"] == left
    page.wait(lambda: line.text == f"Budget left: {left} tokens", "the budget left after a reply")
    while left > 0:
        page.send("one two three four five")
        page.wait_for_reply(len(page.replies()))
        left = call("GET", f"{budget_server.url}/api/openai/usage")[2]["budget"]["tokens_per_day"]["remaining"]
    page.send("one more")
    assert page.notice().startswith("You have used up your usage budget. You can send messages again after")
    page.wait(lambda: line.text == "Budget left: 0 tokens", "an empty budget")


def test_no_line_without_a_budget(browser, tmp_path_factory, migrated_db):  # noqa: F811
    server = _serve(_app(tmp_path_factory, migrated_db))
    try:
        page = Page(browser, server.url).open(fresh=True).ready()
        page.send("hello")
        page.wait_for_reply(1)
        assert not page.find("#budget").is_displayed()
    finally:
        server.stop()
