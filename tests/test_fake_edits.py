"""The fake upstream's single-message and item routes, and thread and conversation modify, through the SDK."""

import httpx2
import openai
import pytest
from openai.types.conversations.conversation import Conversation

from fake_openai import create_fake_app

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")


@pytest.fixture
def client():
    app = create_fake_app(default_duration=0.1)
    http = httpx2.Client(transport=httpx2.WSGITransport(app=app))
    with openai.OpenAI(api_key="sk-test", base_url="http://fake/v1", http_client=http, max_retries=0) as sdk:
        yield sdk


def test_conversation_items_are_read_and_deleted_and_the_delete_answers_the_conversation(client):
    conversation = client.conversations.create(metadata={"a": "1"})
    added = client.conversations.items.create(conversation.id, items=[{"role": "user", "content": "hi"}])
    item_id = added.data[0].id
    got = client.conversations.items.retrieve(item_id, conversation_id=conversation.id)
    assert got.id == item_id and got.type == "message"
    after = client.conversations.items.delete(item_id, conversation_id=conversation.id)
    assert isinstance(after, Conversation) and after.id == conversation.id
    assert client.conversations.items.list(conversation.id).data == []
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(item_id, conversation_id=conversation.id)


def test_a_conversation_update_takes_only_metadata_and_replaces_it(client):
    conversation = client.conversations.create(metadata={"a": "1"})
    updated = client.conversations.update(conversation.id, metadata={"b": "2"})
    assert updated.metadata == {"b": "2"} and client.conversations.retrieve(conversation.id).metadata == {"b": "2"}
    with pytest.raises(openai.BadRequestError, match="metadata"):
        client.post(f"/conversations/{conversation.id}", body={}, cast_to=object)
    with pytest.raises(openai.BadRequestError, match="Unrecognized"):
        client.post(f"/conversations/{conversation.id}", body={"metadata": {}, "items": []}, cast_to=object)


def test_assistants_messages_are_retrieved_modified_and_deleted(client):
    thread = client.beta.threads.create(metadata={"t": "1"})
    message = client.beta.threads.messages.create(thread.id, role="user", content="hi", metadata={"m": "1"})
    assert client.beta.threads.messages.retrieve(message.id, thread_id=thread.id).metadata == {"m": "1"}
    updated = client.beta.threads.messages.update(message.id, thread_id=thread.id, metadata={"m": "2"})
    assert updated.metadata == {"m": "2"} and updated.content[0].text.value == "hi"
    assert client.beta.threads.messages.list(thread.id).data[0].metadata == {"m": "2"}
    assert client.beta.threads.update(thread.id, metadata={"t": "2"}).metadata == {"t": "2"}
    other = client.beta.threads.create()
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.retrieve(message.id, thread_id=other.id)
    deleted = client.beta.threads.messages.delete(message.id, thread_id=thread.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (message.id, "thread.message.deleted", True)
    assert client.beta.threads.messages.list(thread.id).data == []
