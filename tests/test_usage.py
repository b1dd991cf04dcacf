"""Usage: every upstream run or response that ended is recorded once, with what the fake upstream
reported, on both engines, through each ending, tool rounds, retries, the SDK and two instances
on one PostgreSQL; `GET .../usage` and /metrics show the database's totals."""

from __future__ import annotations

import re
import time

import openai
import pytest
import sqlalchemy as sa

from app import usage
from app.assistant_types import lookup
from app.store.usage import KINDS
from tests import tool_handlers
from tests.helpers import TOKENS, Api

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
ACTIVE = ("queued", "in_progress", "cancelling", "requires_action")


def reported(fake) -> dict[str, dict[str, int]]:
    """{upstream ID: tokens} of every run or response the fake upstream has ended, as it reported them."""
    return {
        job_id: usage.tokens_of(job["usage"])
        for job_id, job in fake.usage_report().items()
        if job["status"] not in ACTIVE
    }


def added(tokens: list[dict[str, int]]) -> dict[str, int]:
    return {kind: sum(t[kind] for t in tokens) for kind in KINDS}


def recorded(app) -> dict[str, dict[str, int]]:
    """{upstream ID: tokens} as the usage table holds them."""
    with app.extensions["services"].records.db.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM usage")).mappings().all()
    return {row["upstream_id"]: {kind: row[kind] for kind in KINDS} for row in rows}


def ran(api, thread, text, **body):
    api.say(thread, text)
    return api.run(thread, **body)


@pytest.mark.parametrize(
    ("directive", "http_status", "status"),
    [
        ("", 200, "completed"),
        ("[fake status=failed]", 500, "failed"),
        ("[fake status=incomplete]", 200, "incomplete"),
        ("[fake status=cancelled]", 400, "cancelled"),
        ("[fake status=never]", 408, "cancelled"),  # past the deadline, cancelled by the backend
    ],
)
def test_each_ending_is_recorded_as_the_upstream_reported_it(make_app, fake, directive, http_status, status):
    app = make_app(RUN_TIMEOUT_SECONDS=1, UPSTREAM_TIMEOUT_SECONDS=0.5)
    api = Api(app.test_client(), TOKENS["alice"])
    thread = api.new_thread()
    answer = ran(api, thread, f"tell me about the sea {directive}")
    assert answer.status_code == http_status, answer.json
    upstream = reported(fake)
    assert len(upstream) == 1 and fake.usage_report()[next(iter(upstream))]["status"] == status
    assert recorded(app) == upstream
    today = api.get("/usage").json["today"]
    assert today == added(list(upstream.values()))
    if status != "cancelled" or app.extensions["services"].engine.name == "assistants":
        assert today["total_tokens"] > 0 and today["cached_tokens"] > 0 and today["reasoning_tokens"] == 2


def test_every_tool_round_is_counted_once(make_app, fake, engine_name):
    tool_handlers.reset()
    app = make_app(ASSISTANT_CURATOR_TOOLS="tests.tool_handlers:add")
    api = Api(app.test_client(), TOKENS["alice"])
    thread = api.new_thread()
    answer = ran(api, thread, 'twice [fake call=add args={"a": 1, "b": 1} rounds=3]')
    assert answer.status_code == 200 and answer.json["status"] == "completed", answer.json
    upstream = reported(fake)
    # Responses: one response per model turn, each with its usage; Assistants: one run, its usage at the end.
    assert len(upstream) == (4 if engine_name == "responses" else 1)
    assert recorded(app) == upstream
    report = api.get("/usage").json
    assert report["today"] == report["month"] == added(list(upstream.values()))
    assert report["by_type"] == {"curator": {"today": report["today"], "month": report["today"]}}
    assert answer.json["usage"]["total_tokens"] == report["today"]["total_tokens"]


def test_a_retried_record_a_re_read_and_a_recovered_run_count_once(app, api, fake):
    services = app.extensions["services"]
    thread = api.new_thread()
    answer = ran(api, thread, "hello there")
    assert answer.status_code == 200
    first = recorded(app)
    upstream_run = services.engine.get_run(
        thread, services.records.run(answer.json["id"]).upstream_id or answer.json["id"]
    )
    # The wait retried, or a recovery that finds the run ended: the same upstream ID again.
    assert usage.record_run(services, "alice", "curator", upstream_run.run, answer.json["id"]) is False
    assert api.get(f"/threads/{thread}/runs/{answer.json['id']}").status_code == 200
    assert recorded(app) == first == reported(fake)


def test_a_run_whose_wait_broke_off_is_recorded_when_it_is_read_again(app, api, fake):
    """A run left without its waiter (a worker that died) is recorded by the GET that finds it ended, once."""
    services = app.extensions["services"]
    thread = api.new_thread()
    api.say(thread, "left alone [fake duration=0.1]")
    curator = lookup(services.settings.assistant_types, "curator")
    started = services.engine.start_run(thread, curator, None, None, timeout=3).run
    services.records.save_run(started, "alice", "curator", final=False)
    assert recorded(app) == {}
    deadline = time.monotonic() + 5
    while (seen := api.get(f"/threads/{thread}/runs/{started['id']}").json)["status"] != "completed":
        assert time.monotonic() < deadline, seen["status"]
        time.sleep(0.02)
    assert api.get(f"/threads/{thread}/runs/{started['id']}").json["status"] == "completed"
    assert recorded(app) == reported(fake) and len(reported(fake)) == 1
    assert api.get("/usage").json["by_type"].keys() == {"curator"}


def test_client_tools_through_the_sdk_are_counted_per_upstream_run(live_server, app, fake, engine_name):
    client = openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{live_server.url}/v1")
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(thread.id, role="user", content="weather? [fake status=requires_action]")
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id="curator", tools=[WEATHER])
    assert run.status == "requires_action"
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    run = client.beta.threads.runs.submit_tool_outputs(
        run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "sunny"}]
    )
    assert run.status == "completed"
    upstream = reported(fake)
    assert len(upstream) == (2 if engine_name == "responses" else 1)
    assert recorded(app) == upstream
    report = client.get("/usage", cast_to=object)
    assert report["today"] == added(list(upstream.values()))
    assert run.usage.total_tokens == report["today"]["total_tokens"]
    client.close()


def test_the_usage_route_answers_under_every_prefix_and_per_user(app, fake):
    alice, bob = Api(app.test_client(), TOKENS["alice"]), Api(app.test_client(), TOKENS["bob"])
    thread = alice.new_thread()
    assert ran(alice, thread, "only alice").status_code == 200
    mine = alice.get("/usage").json
    assert mine["user"] == "alice" and mine["budget"] == {}
    assert mine["today"] == added(list(reported(fake).values()))
    for prefix in ("/v1", "/api/assistants/tutor", "/api/assistants/curator"):
        assert alice.under(prefix).get("/usage").json == mine
    assert bob.get("/usage").json["today"] == dict.fromkeys(KINDS, 0)
    assert alice.get("/usage", headers={"Authorization": "Bearer wrong-token-00"}).status_code == 401


def _scraped(client, kind: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    pattern = rf'^backend_tokens_total\{{assistant_type="curator",kind="{kind}",model="gpt-4o"\}} (\S+)$'
    found = [float(m.group(1)) for line in text.splitlines() if (m := re.match(pattern, line))]
    return found[0] if found else 0.0


def test_metrics_count_the_tokens_the_database_holds(app, api, fake):
    client = app.test_client()
    before = {kind: _scraped(client, kind.removesuffix("_tokens")) for kind in KINDS}
    thread = api.new_thread()
    for text in ("one two three", "four five [fake status=incomplete]", "six [fake status=failed]"):
        ran(api, thread, text)
    database = added(list(recorded(app).values()))
    assert database == added(list(reported(fake).values()))
    after = {kind: _scraped(client, kind.removesuffix("_tokens")) for kind in KINDS}
    assert {kind: after[kind] - before[kind] for kind in KINDS} == database
    assert api.get("/usage").json["today"] == database


def test_two_instances_on_one_postgresql_share_the_totals_and_never_count_twice(make_app, postgres_url, fake):
    first, second = make_app(DATABASE_URL=postgres_url), make_app(DATABASE_URL=postgres_url)
    try:
        one, two = Api(first.test_client(), TOKENS["alice"]), Api(second.test_client(), TOKENS["alice"])
        for api in (one, two):
            thread = api.new_thread()
            assert ran(api, thread, "a question from here").status_code == 200
        upstream = reported(fake)
        assert len(upstream) == 2 and recorded(first) == upstream
        assert one.get("/usage").json == two.get("/usage").json
        assert one.get("/usage").json["today"] == added(list(upstream.values()))
        services = [app.extensions["services"] for app in (first, second)]
        job_id = next(iter(upstream))
        job = {"id": job_id, "status": "completed", "model": "gpt-4o", "usage": fake.usage_report()[job_id]["usage"]}
        assert [usage.record_run(s, "alice", "curator", job) for s in services] == [False, False]
        # Both instances meet the same newly ended run (a recovery, a re-read): one row.
        again = dict(job, id="resp_met_by_both")
        assert [usage.record_run(s, "alice", "curator", again) for s in services] == [True, False]
        assert recorded(second) == {**upstream, "resp_met_by_both": upstream[job_id]}
    finally:
        for app in (first, second):
            app.extensions["services"].records.db.dispose()


def test_a_run_waiting_for_the_clients_outputs_and_cancelled_is_recorded(app, api, fake, engine_name):
    thread = api.new_thread()
    api.say(thread, "weather? [fake status=requires_action]")
    run = api.run(thread, tools=[WEATHER]).json
    assert run["status"] == "requires_action"
    cancelled = api.post(f"/threads/{thread}/runs/{run['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    upstream = reported(fake)
    # Responses: the turn that asked ended upstream (recorded then); Assistants: the run the backend cancelled.
    assert len(upstream) == 1 and recorded(app) == upstream
    assert api.get("/usage").json["by_type"]["curator"]["today"] == added(list(upstream.values()))


@pytest.mark.parametrize("wait_strategy", ["poll", "stream"])
def test_a_streamed_run_is_recorded_like_a_waited_one(make_app, fake, wait_strategy):
    app = make_app(WAIT_STRATEGY=wait_strategy)
    api = Api(app.test_client(), TOKENS["alice"])
    thread = api.new_thread()
    api.say(thread, "stream me a few words")
    with api.run(thread, stream=True) as answer:
        body = answer.get_data(as_text=True)
    assert "event: thread.run.completed" in body
    upstream = reported(fake)
    assert len(upstream) == 1 and recorded(app) == upstream
    assert api.get("/usage").json["today"]["reasoning_tokens"] == 2


def test_metrics_show_every_kind_of_token_after_a_run_those_it_did_not_use_at_zero(make_app):
    # A model no other test uses: its series are new to this process. One word in: none of it cached.
    app = make_app(ASSISTANT_CURATOR_MODEL="gpt-4o-mini-metrics")
    api = Api(app.test_client(), TOKENS["alice"])
    ran(api, api.new_thread(), "hi")
    lines = app.test_client().get("/metrics").get_data(as_text=True).splitlines()
    shown = {}
    for line in lines:
        if found := re.match(r'^backend_tokens_total\{.*kind="(\w+)",model="gpt-4o-mini-metrics"\} (\S+)$', line):
            shown[found.group(1)] = float(found.group(2))
    assert set(shown) == {"input", "cached", "output", "reasoning", "total"}
    assert shown["cached"] == 0.0 < shown["input"]
