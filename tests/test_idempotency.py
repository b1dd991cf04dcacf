"""`Idempotency-Key` on POST .../messages and .../runs: the first answer again, no new upstream call."""

from __future__ import annotations

import pytest

from tests.helpers import RUN_CREATE, upstream_calls


def _upstream_writes(fake):
    return upstream_calls(fake, writes_only=True)


def test_a_repeated_run_gets_the_first_answer_without_a_second_run(api, fake, engine_name):
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=0.1]")
    key = {"Idempotency-Key": "run-attempt-1"}
    first = api.post(f"/threads/{thread}/runs", json={"assistant_type": "curator"}, headers=key)
    again = api.post(f"/threads/{thread}/runs", json={"assistant_type": "curator"}, headers=key)
    assert first.status_code == again.status_code == 200
    assert again.json == first.json and again.headers["Idempotent-Replayed"] == "true"
    assert fake.stats()["requests"][RUN_CREATE[engine_name]] == 1


def test_a_repeated_error_answer_is_replayed_with_its_headers(api, fake):
    thread = api.new_thread()
    api.say(thread, "boom [fake status=failed duration=0.05]")
    key = {"Idempotency-Key": "failing-run"}
    first = api.post(f"/threads/{thread}/runs", json={"assistant_type": "curator"}, headers=key)
    again = api.post(f"/threads/{thread}/runs", json={"assistant_type": "curator"}, headers=key)
    assert first.status_code == again.status_code == 500
    assert again.json == first.json and again.headers["x-should-retry"] == "false"
    assert fake.stats()["runs_created"] == 1


def test_a_repeated_message_is_added_once(api, fake):
    thread = api.new_thread()
    key = {"Idempotency-Key": "msg-42"}
    body = {"role": "user", "content": "only once"}
    first = api.post(f"/threads/{thread}/messages", json=body, headers=key)
    writes = _upstream_writes(fake)
    again = api.post(f"/threads/{thread}/messages", json=body, headers=key)
    assert again.json["id"] == first.json["id"]
    assert _upstream_writes(fake) == writes
    assert len(api.get(f"/threads/{thread}/messages").json["data"]) == 1


def test_the_same_key_with_another_body_is_refused(api):
    thread = api.new_thread()
    key = {"Idempotency-Key": "reused"}
    api.post(f"/threads/{thread}/messages", json={"role": "user", "content": "one"}, headers=key)
    other = api.post(f"/threads/{thread}/messages", json={"role": "user", "content": "two"}, headers=key)
    assert other.status_code == 422


def test_keys_belong_to_their_user(api):
    thread = api.new_thread()
    key = {"Idempotency-Key": "shared-key"}
    api.post(f"/threads/{thread}/messages", json={"role": "user", "content": "alice"}, headers=key)
    bob = api.as_user("bob")
    bobs = bob.new_thread()
    answer = bob.post(f"/threads/{bobs}/messages", json={"role": "user", "content": "bob"}, headers=key)
    assert answer.status_code == 200 and answer.json["thread_id"] == bobs


@pytest.mark.parametrize("engine_name", ["responses"])
def test_a_refused_request_does_not_burn_the_key(api):
    thread = api.new_thread()
    key = {"Idempotency-Key": "first-try-bad"}
    bad = api.post(f"/threads/{thread}/messages", json={"role": "user", "content": ""}, headers=key)
    assert bad.status_code == 400
    good = api.post(f"/threads/{thread}/messages", json={"role": "user", "content": ""}, headers=key)
    assert good.status_code == 400 and "Idempotent-Replayed" not in good.headers


def test_an_overlong_key_is_400(api):
    thread = api.new_thread()
    answer = api.post(
        f"/threads/{thread}/messages", json={"role": "user", "content": "x"}, headers={"Idempotency-Key": "k" * 300}
    )
    assert answer.status_code == 400


@pytest.mark.parametrize("engine_name", ["responses"])
def test_a_claim_left_by_a_crashed_process_is_abandoned_in_time(app):
    records = app.extensions["services"].records
    assert records.claim_idempotency_key("alice", "crash", "POST /x", abandoned_after=60) is None
    still_running = records.claim_idempotency_key("alice", "crash", "POST /x", abandoned_after=60)
    assert still_running["status_code"] is None
    assert records.claim_idempotency_key("alice", "crash", "POST /x", abandoned_after=0) is None


def test_a_repeated_client_error_answer_keeps_its_status(api, fake):
    thread = api.new_thread()
    api.say(thread, "stop [fake status=cancelled duration=0.05]")
    key = {"Idempotency-Key": "cancelled-run"}
    first = api.post(f"/threads/{thread}/runs", json={"assistant_type": "curator"}, headers=key)
    again = api.post(f"/threads/{thread}/runs", json={"assistant_type": "curator"}, headers=key)
    assert first.status_code == 400 and first.json["runStatus"] == "cancelled"
    assert again.status_code == 400 and again.json == first.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert fake.stats()["runs_created"] == 1


@pytest.mark.parametrize("prefix", ["/api/openai", "/v1"])
def test_a_repeated_stream_is_a_409_in_the_prefixs_error_shape(api, fake, prefix):
    client = api.under(prefix)
    thread = client.new_thread()
    client.say(thread, "hello [fake duration=0.05]")
    key = {"Idempotency-Key": "streamed-once"}
    body = {"assistant_type": "curator", "stream": True}
    first = client.post(f"/threads/{thread}/runs", json=body, headers=key)
    assert first.status_code == 200 and b"event: done" in first.data
    again = client.post(f"/threads/{thread}/runs", json=body, headers=key)
    assert again.status_code == 409 and again.headers["Idempotent-Replayed"] == "true"
    error = again.json["error"]
    message = error["message"] if prefix == "/v1" else error
    assert "cannot be replayed" in message
    assert fake.stats()["runs_created"] == 1
