"""Budgets: a user at or over a budget is refused (429 `budget_exceeded`) before anything reaches the
upstream, until the period turns (an injected clock); per-type and cost budgets; the admin view."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import openai
import pytest

from app import usage
from app.settings import ConfigError, load_settings
from tests.helpers import TOKENS, Api, upstream_calls

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
# 23:59:00 UTC on the last day of a month: a minute before both the day and the month turn.
LAST_MINUTE = datetime(2026, 3, 31, 23, 59, tzinfo=UTC).timestamp()
NEXT_DAY = datetime(2026, 4, 1, tzinfo=UTC).timestamp()
NEXT_MONTH = datetime(2026, 5, 1, tzinfo=UTC).timestamp()


class Clock:
    """The usage module's clock, set by the test."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fixed = Clock(LAST_MINUTE)
    monkeypatch.setattr(usage, "clock", fixed)
    return fixed


def ran(api, text, **body):
    thread = api.new_thread()
    api.say(thread, text)
    return api.run(thread, **body)


def test_a_budget_used_up_mid_day_refuses_the_next_run_until_the_day_turns(make_app, fake, clock):
    api = Api(make_app(BUDGET_TOKENS_PER_DAY=10).test_client(), TOKENS["alice"])
    assert ran(api, "one two three four five six").status_code == 200  # 6 in, 9 out: 15 of 10
    used = api.get("/usage").json
    assert used["budget"]["tokens_per_day"] == {"limit": 10, "used": 15, "remaining": 0, "reset_at": int(NEXT_DAY)}

    thread = api.new_thread()
    api.say(thread, "again")
    writes = upstream_calls(fake, writes_only=True)
    refused = api.run(thread)
    assert refused.status_code == 429
    assert refused.json["code"] == "budget_exceeded" and refused.json["budget"] == "tokens_per_day"
    assert refused.json["reset_at"] == int(NEXT_DAY)
    assert refused.json["error"].startswith("Usage budget exceeded: 10 tokens per day are used up")
    assert refused.headers["Retry-After"] == "60" and refused.headers["x-should-retry"] == "false"
    assert upstream_calls(fake, writes_only=True) == writes  # the upstream saw nothing of it
    assert api.run(thread, stream=True).status_code == 429  # a streamed run is refused before its first event
    assert upstream_calls(fake, writes_only=True) == writes

    assert api.as_user("bob").run(api.as_user("bob").new_thread()).status_code != 429  # bob's own budget

    clock.now = NEXT_DAY + 1
    assert api.run(thread).status_code == 200
    fresh = api.get("/usage").json
    assert fresh["today"]["total_tokens"] == fresh["month"]["total_tokens"] > 0  # a new month too
    assert fresh["budget"]["tokens_per_day"]["reset_at"] == int(NEXT_DAY + 86400)


def test_a_monthly_budget_holds_across_days_and_turns_with_the_month(make_app, fake, clock):
    api = Api(make_app(BUDGET_TOKENS_PER_MONTH=10).test_client(), TOKENS["alice"])
    clock.now = NEXT_DAY
    assert ran(api, "one two three four five six").status_code == 200
    clock.now = NEXT_DAY + 5 * 86400  # days later, the same month
    refused = ran(api, "more")
    assert refused.status_code == 429 and refused.json["budget"] == "tokens_per_month"
    assert refused.json["reset_at"] == int(NEXT_MONTH)
    assert int(refused.headers["Retry-After"]) == int(NEXT_MONTH - clock.now)
    clock.now = NEXT_MONTH
    assert ran(api, "more").status_code == 200


def test_the_sdk_gets_openais_error_shape_and_does_not_retry(make_app, fake, clock):
    from tests.helpers import ServerThread

    server = ServerThread(make_app(BUDGET_TOKENS_PER_DAY=1))
    client = openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{server.url}/v1")
    try:
        thread = client.beta.threads.create()
        client.beta.threads.messages.create(thread.id, role="user", content="hello")
        assert client.beta.threads.runs.create(thread_id=thread.id, assistant_id="curator").status == "completed"
        before = fake.stats()["runs_created"]
        with pytest.raises(openai.RateLimitError) as refused:
            client.beta.threads.runs.create(thread_id=thread.id, assistant_id="curator")
        error = refused.value.body
        assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
        assert error["reset_at"] == int(NEXT_DAY) and error["param"] is None
        assert refused.value.response.headers["Retry-After"] == "60"
        assert fake.stats()["runs_created"] == before
        assert client.get("/usage", cast_to=object)["budget"]["tokens_per_day"]["remaining"] == 0
    finally:
        client.close()
        server.stop()


def test_a_type_budget_replaces_the_daily_one_for_that_type(make_app, fake, clock):
    api = Api(
        make_app(BUDGET_TOKENS_PER_DAY=1000, ASSISTANT_TUTOR_BUDGET_TOKENS_PER_DAY=5).test_client(), TOKENS["alice"]
    )
    assert ran(api, "one two three", assistant_type="tutor").status_code == 200
    refused = ran(api, "again", assistant_type="tutor")
    assert refused.status_code == 429 and "per day for 'tutor'" in refused.json["error"]
    assert ran(api, "the curator still answers").status_code == 200
    budget = api.get("/usage").json["budget"]
    assert budget["by_type"]["tutor"]["tokens_per_day"]["remaining"] == 0
    assert budget["tokens_per_day"]["limit"] == 1000 and budget["tokens_per_day"]["remaining"] > 900
    under_type = Api(api.client, TOKENS["alice"], "/api/assistants/tutor")
    assert under_type.post(f"/threads/{under_type.new_thread()}/runs", json={}).status_code == 429


def test_a_cost_budget_adds_up_each_models_price(make_app, fake, clock):
    prices = {"gpt-4o": {"input": 1_000_000, "cached": 0, "output": 100_000}}  # USD per million tokens
    api = Api(make_app(PRICES=json.dumps(prices), BUDGET_USD_PER_DAY=2).test_client(), TOKENS["alice"])
    assert ran(api, "one two three four").status_code == 200  # 4 in (2 cached), 7 out: 2 + 0 + 0.7 USD
    report = api.get("/usage").json
    assert report["cost_usd"] == {"today": 2.7, "month": 2.7}
    assert report["budget"]["usd_per_day"] == {"limit": 2.0, "used": 2.7, "remaining": 0, "reset_at": int(NEXT_DAY)}
    refused = ran(api, "more")
    assert refused.status_code == 429 and refused.json["budget"] == "usd_per_day"
    assert "2 USD per day" in refused.json["error"]


def test_tool_outputs_of_a_user_over_budget_are_refused_before_they_go_upstream(make_app, fake, clock, base_env):
    generous = Api(make_app().test_client(), TOKENS["alice"])
    strict = Api(make_app(BUDGET_TOKENS_PER_DAY=1).test_client(), TOKENS["alice"])  # the same database
    thread = generous.new_thread()
    generous.say(thread, "weather? [fake status=requires_action]")
    run = generous.run(thread, tools=[WEATHER]).json
    assert run["status"] == "requires_action"
    assert ran(generous, "spend the rest").status_code == 200
    call_id = run["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]
    writes = upstream_calls(fake, writes_only=True)
    outputs = {"tool_outputs": [{"tool_call_id": call_id, "output": "sunny"}]}
    refused = strict.post(f"/threads/{thread}/runs/{run['id']}/submit_tool_outputs", json=outputs)
    assert refused.status_code == 429 and refused.json["code"] == "budget_exceeded"
    assert upstream_calls(fake, writes_only=True) == writes
    answered = generous.post(f"/threads/{thread}/runs/{run['id']}/submit_tool_outputs", json=outputs)
    assert answered.status_code == 200 and answered.json["status"] == "completed"  # the run was left intact


def test_the_admin_view_lists_every_user_and_is_only_for_admins(make_app, fake, clock):
    app = make_app(ADMIN_USERS="bob, carol")
    alice, bob = Api(app.test_client(), TOKENS["alice"]), Api(app.test_client(), TOKENS["bob"])
    assert ran(alice, "from alice").status_code == 200
    assert ran(bob, "from bob, longer").status_code == 200
    for path in ("/usage/users", "/usage?user=bob"):
        denied = alice.get(path)
        assert denied.status_code == 403 and denied.json == {"error": "This needs an administrator (ADMIN_USERS)."}
    assert alice.get("/usage?user=alice").status_code == 200
    everyone = bob.get("/usage/users").json
    assert set(everyone["users"]) == {"alice", "bob"}
    assert everyone["users"]["alice"]["today"] == alice.get("/usage").json["today"]
    assert bob.get("/usage?user=alice").json == alice.get("/usage").json
    assert bob.under("/v1").get("/usage/users").json == everyone
    denied = alice.under("/v1").get("/usage/users")
    assert denied.status_code == 403 and denied.json["error"]["message"] == "This needs an administrator (ADMIN_USERS)."


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"BUDGET_USD_PER_DAY": "5"}, "a cost budget needs a price table (PRICES)"),
        ({"ASSISTANT_NOBODY_BUDGET_TOKENS_PER_DAY": "5"}, "no assistant type 'nobody' is configured"),
        ({"BUDGET_TOKENS_PER_DAY": "-1"}, "BUDGET_TOKENS_PER_DAY: expected a number of at least 0"),
        ({"PRICES": "{not json"}, "PRICES: not JSON"),
        ({"PRICES": '{"gpt-4o": {"input": 1}}'}, "'gpt-4o' needs 'input' and 'output'"),
        ({"PRICES": '{"gpt-4o": {"input": -1, "output": 1}}'}, "prices must be numbers of at least 0"),
        ({"BUDGET_TIMEZONE": "Mars/Olympus"}, "BUDGET_TIMEZONE: unknown time zone"),
    ],
)
def test_bad_budget_settings_stop_the_start_with_a_line_naming_them(base_env, variables, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_settings({**base_env, **variables})


def test_days_follow_the_configured_time_zone(make_app, fake, clock):
    api = Api(make_app(BUDGET_TOKENS_PER_DAY=1, BUDGET_TIMEZONE="Asia/Tokyo").test_client(), TOKENS["alice"])
    clock.now = datetime(2026, 4, 1, 14, 59, tzinfo=UTC).timestamp()  # 23:59 in Tokyo
    assert ran(api, "hello").status_code == 200
    refused = ran(api, "hello")
    assert refused.json["reset_at"] == int(datetime(2026, 4, 1, 15, tzinfo=UTC).timestamp())
    clock.now += 61
    assert ran(api, "hello").status_code == 200


def test_the_day_and_month_follow_the_clock_back_and_forth_in_each_time_zone(clock):
    from app.budgets import Budgets

    utc, tokyo = Budgets(), Budgets(timezone="Asia/Tokyo")
    assert usage.periods(utc) == usage.Periods("2026-03-31", "2026-03", int(NEXT_DAY), int(NEXT_DAY))
    assert usage.periods(tokyo).day == "2026-04-01"  # 08:59 there, the same instant
    clock.now = NEXT_DAY + 1
    assert usage.periods(utc) == usage.Periods("2026-04-01", "2026-04", int(NEXT_DAY + 86400), int(NEXT_MONTH))
    clock.now = LAST_MINUTE  # back again: a day worked out before is not reused outside its hours
    assert usage.periods(utc).day == "2026-03-31"
    assert usage.periods(tokyo) == usage.Periods(
        "2026-04-01", "2026-04", int(NEXT_DAY + 86400 - 9 * 3600), int(NEXT_MONTH - 9 * 3600)
    )
