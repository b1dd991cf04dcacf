"""The official `openai` SDK, pointed at this backend, works for every call of the contract."""

from __future__ import annotations

import httpx2
import openai
import pytest

from tests.helpers import RUN_CREATE, TOKENS, create_run_upstream

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")


@pytest.fixture
def sdk(live_server):
    """An SDK client of this backend, with the SDK's default retries left on."""
    client = openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{live_server.url}/api/openai")
    yield client
    client.close()


def test_threads_messages_and_runs_through_the_sdk(sdk):
    thread = sdk.beta.threads.create(messages=[{"role": "user", "content": "hi [fake duration=0.1]"}])
    assert sdk.beta.threads.retrieve(thread.id).id == thread.id
    message = sdk.beta.threads.messages.create(thread.id, role="user", content="What is art? [fake duration=0.2]")
    assert message.content[0].text.value.startswith("What is art?")

    run = sdk.beta.threads.runs.create(thread_id=thread.id, assistant_id="curator")
    assert run.status == "completed"  # the backend waited for it
    assert sdk.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "completed"

    page = sdk.beta.threads.messages.list(thread.id, order="asc", limit=2)
    assert [m.role for m in page.data] == ["user", "user"]
    everything = list(page)  # iterating a page follows the cursors
    assert everything[-1].role == "assistant" and everything[-1].run_id == run.id
    by_run = sdk.beta.threads.messages.list(thread.id, run_id=run.id)
    assert [m.id for m in by_run.data] == [everything[-1].id]

    deleted = sdk.beta.threads.delete(thread.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        sdk.beta.threads.retrieve(thread.id)


def test_create_and_poll(sdk):
    thread = sdk.beta.threads.create()
    sdk.beta.threads.messages.create(thread.id, role="user", content="hello [fake duration=0.2]")
    run = sdk.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id="curator")
    assert run.status == "completed"


def test_cancel_through_the_sdk(sdk, app):
    thread = sdk.beta.threads.create()
    sdk.beta.threads.messages.create(thread.id, role="user", content="forever [fake status=never]")
    backend = app.extensions["services"]
    from app.assistant_types import AssistantType

    # A run started by an older frontend path (not waited on), then cancelled through the SDK.
    run = create_run_upstream(backend.engine, thread.id, AssistantType("curator", "asst_curator", "gpt-4o"))
    backend.records.save_run(run, "alice", "curator", final=False)
    cancelled = sdk.beta.threads.runs.cancel(run["id"], thread_id=thread.id)
    assert cancelled.status in ("cancelling", "cancelled")


@pytest.mark.parametrize("script,error", [("status=failed", openai.InternalServerError), ("status=never", None)])
def test_a_failed_or_timed_out_run_reaches_the_upstream_once(make_app, fake, engine_name, script, error):
    from tests.helpers import ServerThread

    app = make_app(RUN_TIMEOUT_SECONDS=1, UPSTREAM_TIMEOUT_SECONDS=0.5)
    server = ServerThread(app)
    try:
        sdk = openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{server.url}/api/openai")  # default: 2 retries
        thread = sdk.beta.threads.create()
        sdk.beta.threads.messages.create(thread.id, role="user", content=f"go [fake {script} duration=0.1]")
        with pytest.raises(openai.APIStatusError) as raised:
            sdk.beta.threads.runs.create(thread_id=thread.id, assistant_id="curator")
        if error is not None:
            assert isinstance(raised.value, error)
        else:
            assert raised.value.status_code == 408
        assert fake.stats()["requests"].get(RUN_CREATE[engine_name]) == 1
        sdk.close()
    finally:
        server.stop()


def test_sdk_errors_carry_the_contract_message(sdk):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.beta.threads.runs.create(thread_id=sdk.beta.threads.create().id, assistant_id="painter")
    # The SDK reads `error` of the body; here it is the contract's message string.
    assert "Configured types: curator, tutor" in raised.value.body


def test_wsgi_transport_reaches_the_backend_in_process(app):
    """The SDK can also talk to the app with no socket at all (httpx2's WSGI transport)."""
    client = openai.OpenAI(
        api_key=TOKENS["bob"],
        base_url="http://backend.test/api/openai",
        http_client=httpx2.Client(transport=httpx2.WSGITransport(app=app)),
    )
    thread = client.beta.threads.create()
    assert client.beta.threads.retrieve(thread.id).id == thread.id
