"""POST .../runs waits on the server and answers per the contract's status table, on both engines."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.api.outcomes import FINAL_STATUS_OUTCOMES, TIMEOUT_OUTCOME
from app.contract import UpstreamRejected
from tests.helpers import RUN_CREATE, RUN_GET, background_run, create_run_upstream, upstream_calls


def _count(fake, engine_name, table):
    return upstream_calls(fake, table[engine_name])


def test_completed_run_answers_200_with_the_reply_in_messages(api):
    thread = api.new_thread()
    api.say(thread, "What is a curator? [fake duration=0.3]")
    started = time.monotonic()
    answer = api.run(thread)
    assert answer.status_code == 200
    assert time.monotonic() - started >= 0.3
    run = answer.json
    assert run["object"] == "thread.run" and run["status"] == "completed"
    assert run["thread_id"] == thread and run["assistant_id"] == "asst_curator"
    for field in (
        "created_at",
        "started_at",
        "completed_at",
        "cancelled_at",
        "failed_at",
        "expires_at",
        "last_error",
        "incomplete_details",
        "model",
        "instructions",
        "temperature",
        "top_p",
        "usage",
    ):
        assert field in run
    assert set(run["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    reply = api.get(f"/threads/{thread}/messages").json["data"][0]
    assert reply["role"] == "assistant" and reply["run_id"] == run["id"]
    assert reply["content"][0]["text"]["value"] == "Echo: What is a curator?"


OUTCOMES = [
    ("incomplete", 200, None),
    ("failed", 500, "Run failed: The fake upstream failed this run on purpose."),
    ("cancelled", 400, "Run was cancelled"),
    ("requires_action", 400, "Run requires action (function calling not implemented)"),
]


@pytest.mark.parametrize("status,http,error", OUTCOMES)
def test_final_status_maps_to_its_http_answer(api, status, http, error):
    thread = api.new_thread()
    api.say(thread, f"hello [fake status={status} duration=0.1]")
    answer = api.run(thread)
    assert answer.status_code == http == FINAL_STATUS_OUTCOMES[status].http_status
    if error is None:
        assert answer.json["status"] == status
        assert answer.json["incomplete_details"]["reason"]
        assert "x-should-retry" not in answer.headers
    else:
        assert answer.json["error"] == error
        assert answer.json["runStatus"] == status
        assert answer.json["run"]["status"] == status
        assert answer.headers["x-should-retry"] == "false"


def test_expired_run_answers_410(api, engine_name):
    if engine_name == "responses":
        # The Responses API has no `expired`; the fake reports such a run as failed.
        expected = (500, "failed")
    else:
        expected = (410, "expired")
    thread = api.new_thread()
    api.say(thread, "hello [fake status=expired duration=0.1]")
    answer = api.run(thread)
    assert (answer.status_code, answer.json["runStatus"]) == expected
    if engine_name == "assistants":
        assert answer.json["error"] == "Run expired"


def test_requires_action_is_cancelled_so_the_thread_takes_the_next_message(api):
    thread = api.new_thread()
    api.say(thread, "weather? [fake status=requires_action duration=0.1]")
    assert api.run(thread).status_code == 400
    api.say(thread, "never mind")
    assert api.run(thread).status_code == 200


def test_after_a_run_that_required_action_the_next_run_completes(api, fake, engine_name):
    thread = api.new_thread()
    api.say(thread, "weather? [fake status=requires_action duration=0.1]")
    stopped = api.run(thread)
    assert stopped.status_code == 400 and stopped.json["runStatus"] == "requires_action"
    call_id = stopped.json["run"]["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]
    if engine_name == "responses":  # the call is answered, not cancelled (a completed response can't be)
        assert fake.stats()["requests"].get("POST /v1/responses/{response_id}/cancel", 0) == 0
        closed = [i for i in fake.conversations[thread].items if i["type"] == "function_call_output"]
        assert [i["call_id"] for i in closed] == [call_id]
    api.say(thread, "never mind [fake duration=0.1]")
    answer = api.run(thread)
    assert answer.status_code == 200 and answer.json["status"] == "completed"
    assert api.get(f"/threads/{thread}/messages").json["data"][0]["content"][0]["text"]["value"] == "Echo: never mind"


def test_deadline_answers_408_and_cancels_the_run_upstream(make_app, engine_name):
    from tests.helpers import TOKENS, Api

    app = make_app(RUN_TIMEOUT_SECONDS=1, UPSTREAM_TIMEOUT_SECONDS=0.5)
    api = Api(app.test_client(), TOKENS["alice"])
    thread = api.new_thread()
    api.say(thread, "think for ever [fake status=never]")
    started = time.monotonic()
    answer = api.run(thread)
    waited = time.monotonic() - started
    assert answer.status_code == 408 == TIMEOUT_OUTCOME.http_status
    assert answer.json["error"] == "Run timeout exceeded 1 seconds"
    # The answer shows the run as it is after the cancel, as every later read does.
    assert answer.json["runStatus"] == answer.json["run"]["status"] == "cancelled"
    assert answer.json["run"]["cancelled_at"] is not None
    assert answer.headers["x-should-retry"] == "false"
    assert 1.0 <= waited < 4.0
    run_id = answer.json["run"]["id"]
    assert api.get(f"/threads/{thread}/runs/{run_id}").json["status"] == "cancelled"
    api.say(thread, "are you there? [fake duration=0.1]")
    assert api.run(thread).status_code == 200


def test_no_cancel_on_timeout_when_switched_off(make_app, fake):
    from tests.helpers import TOKENS, Api

    app = make_app(RUN_TIMEOUT_SECONDS=1, UPSTREAM_TIMEOUT_SECONDS=0.5, RUN_CANCEL_ON_TIMEOUT="false")
    api = Api(app.test_client(), TOKENS["alice"])
    thread = api.new_thread()
    api.say(thread, "think for ever [fake status=never]")
    answer = api.run(thread)
    assert answer.status_code == 408
    assert fake.run_info(answer.json["run"]["id"])["status"] == "in_progress"


def test_runs_succeed_while_a_third_of_status_polls_fail(api, fake):
    fake.config.fail_every_nth_poll = 3
    thread = api.new_thread()
    for attempt in range(3):
        api.say(thread, f"attempt {attempt} [fake duration=0.4]")
        answer = api.run(thread)
        assert answer.status_code == 200, answer.json
        assert answer.json["status"] == "completed"


@pytest.mark.parametrize("kind", ["429", "503"])
def test_rate_limited_or_failing_polls_are_retried(api, fake, kind):
    fake.config.fail_every_nth_poll = 2
    fake.config.fail_kind = kind
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=0.3]")
    assert api.run(thread).status_code == 200


@pytest.mark.parametrize("engine_name", ["assistants"])  # the Responses API sends no openai-poll-after-ms
def test_upstream_pacing_hint_is_honoured(api, fake, engine_name):
    fake.config.poll_after_ms = 400
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=1.0]")
    assert api.run(thread).status_code == 200
    # With 20-100 ms of our own, ~1 s of run would take 10+ polls; at 400 ms it takes about 3.
    assert _count(fake, engine_name, RUN_GET) <= 5


def test_polls_that_keep_failing_with_a_long_retry_after_still_end_in_the_deadline(make_app, fake, engine_name):
    from tests.helpers import TOKENS, Api

    fake.config.fail_every_nth_poll = 1
    fake.config.fail_kind = "429"
    fake.config.retry_after = "30"
    api = Api(make_app(RUN_TIMEOUT_SECONDS=1, UPSTREAM_TIMEOUT_SECONDS=0.5).test_client(), TOKENS["alice"])
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=0.3]")
    started = time.monotonic()
    answer = api.run(thread)
    waited = time.monotonic() - started
    assert answer.status_code == 408
    assert 1.0 <= waited < 1.5  # the 30 s Retry-After is cut to the deadline


def test_two_simultaneous_runs_on_one_thread_start_one_upstream_run(api, fake, engine_name):
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=0.5]")
    barrier = threading.Barrier(2)

    def start():
        barrier.wait()
        return api.run(thread)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: start(), range(2)))
    assert sorted(a.status_code for a in answers) == [200, 409]
    busy = next(a for a in answers if a.status_code == 409)
    assert "active run" in busy.json["error"]
    assert busy.headers["x-should-retry"] == "false"
    assert _count(fake, engine_name, RUN_CREATE) == 1


def test_upstream_active_run_error_becomes_409(api, fake, app, engine_name):
    thread = api.new_thread()
    api.say(thread, "hello [fake status=never]")
    engine = app.extensions["services"].engine
    from app.assistant_types import AssistantType

    create_run_upstream(engine, thread, AssistantType("curator", "asst_curator", "gpt-4o"))  # started behind our back
    answer = api.run(thread)
    assert answer.status_code == 409


def test_fifty_simultaneous_waits_on_different_threads_are_all_answered(api):
    threads = [api.new_thread() for _ in range(50)]
    for index, thread in enumerate(threads):
        api.say(thread, f"question {index} [fake duration=0.5]")
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(api.run, threads))
    assert [a.status_code for a in answers] == [200] * 50
    assert {a.json["thread_id"] for a in answers} == set(threads)


def test_temperature_and_top_p_come_from_the_type_unless_overridden(api, engine_name):
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=0.05]")
    run = api.post(f"/threads/{thread}/runs", json={"assistant_type": "tutor"}).json
    assert run["temperature"] == pytest.approx(0.3) and run["assistant_id"] == "asst_tutor"
    if engine_name == "responses":  # on the assistants engine the model is the upstream assistant's
        assert run["model"] == "gpt-4o-mini" and run["instructions"] is None
    api.say(thread, "again [fake duration=0.05]")
    run = api.post(f"/threads/{thread}/runs", json={"assistant_type": "tutor", "temperature": 1.5, "top_p": 0.5}).json
    assert run["temperature"] == pytest.approx(1.5) and run["top_p"] == pytest.approx(0.5)


def test_retrieve_of_an_active_run_carries_a_poll_hint(api):
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=0.8]")
    with background_run(api, thread) as (pending, run_id):
        polled = api.get(f"/threads/{thread}/runs/{run_id}")
        assert polled.status_code == 200
        assert polled.json["status"] in ("queued", "in_progress")
        assert int(polled.headers["openai-poll-after-ms"]) > 0
        assert pending.result().status_code == 200
    done = api.get(f"/threads/{thread}/runs/{run_id}")
    assert done.json["status"] == "completed" and "openai-poll-after-ms" not in done.headers


def test_cancel_of_a_waiting_run_ends_the_wait_with_400(api):
    thread = api.new_thread()
    api.say(thread, "hello [fake status=never]")
    with background_run(api, thread) as (pending, run_id):
        cancelled = api.post(f"/threads/{thread}/runs/{run_id}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json["status"] in ("cancelling", "cancelled")
        answer = pending.result()
    assert answer.status_code == 400 and answer.json["runStatus"] == "cancelled"


def test_run_of_another_thread_is_404(api):
    first, second = api.new_thread(), api.new_thread()
    api.say(first, "hello [fake duration=0.05]")
    run_id = api.run(first).json["id"]
    assert api.get(f"/threads/{second}/runs/{run_id}").status_code == 404
    assert api.post(f"/threads/{second}/runs/{run_id}/cancel").status_code == 404


def test_a_wait_broken_off_by_an_upstream_refusal_frees_the_thread(api, app, monkeypatch):
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=0.3]")
    engine = app.extensions["services"].engine

    def refused(*args, **kwargs):
        raise UpstreamRejected("retrieve run: the upstream refused", status=400)

    monkeypatch.setattr(engine, "get_run", refused)
    answer = api.run(thread)
    assert answer.status_code == 400 and "refused" in answer.json["error"]
    assert app.extensions["services"].records.active_run(thread) is None
