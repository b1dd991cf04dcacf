"""The README's run command: with no key, the dev server answers from the offline upstream."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
import uuid

import pytest

from harness.servers import ROOT, free_port, http_status, wait_until


def _call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        base + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def dev_server(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ASSISTANT_", "AUTH_", "API_TOKENS"))}
    env.update(PORT=str(port), DATABASE_URL=f"sqlite:///{tmp_path}/dev.db", OPENAI_API_KEY="", OPENAI_BASE_URL="")
    log = (tmp_path / "server.log").open("w+")
    server = subprocess.Popen(
        ["bash", "scripts/run.sh"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy():
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            return http_status(base + "/healthz", timeout=1) == 200

        wait_until(healthy, 120, "the dev server to answer /healthz", interval=0.1)
        yield base, tmp_path / "server.log"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_the_curl_session_gets_the_offline_reply_in_the_first_run_request(dev_server):
    base, log = dev_server
    thread = _call(base, "POST", "/api/openai/threads", {})
    _call(base, "POST", f"/api/openai/threads/{thread['id']}/messages", {"role": "user", "content": "Hello!"})
    run = _call(base, "POST", f"/api/openai/threads/{thread['id']}/runs", {"assistant_type": "curator"})
    assert run["status"] == "completed"
    messages = _call(base, "GET", f"/api/openai/threads/{thread['id']}/messages")
    assert messages["data"][0]["content"][0]["text"]["value"] == "[offline upstream] Echo: Hello!"
    said = log.read_text()
    assert "OFFLINE" in said and "AUTH_MODE=none" in said
    assert thread["id"].startswith("conv_")  # the default engine is responses
    assert http_status(base + "/") == 200  # the chat page is on under make run


def test_the_readme_tool_call_runs_the_example_tool_offline(dev_server):
    base, log = dev_server
    thread = _call(base, "POST", "/api/openai/threads", {})["id"]
    text = 'Time in Tokyo? [fake call=current_time args={"timezone": "Asia/Tokyo"}]'
    _call(base, "POST", f"/api/openai/threads/{thread}/messages", {"role": "user", "content": text})
    run = _call(base, "POST", f"/api/openai/threads/{thread}/runs", {"assistant_type": "curator"})
    assert run["status"] == "completed"
    assert {t["function"]["name"] for t in run["tools"] if t["type"] == "function"} == {
        "current_time",
        "convert_temperature",
    }
    reply = _call(base, "GET", f"/api/openai/threads/{thread}/messages?limit=1")["data"][0]["content"][0]["text"]
    assert reply["value"].startswith("[offline upstream] Echo: Time in Tokyo? | current_time -> 20")
    assert reply["value"].endswith("+09:00")
    assert "example tools" in log.read_text()


def _upload(base, filename, content: bytes):
    """POST /files as `curl -F purpose=assistants -F file=@...` sends it."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: text/plain\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    request = urllib.request.Request(base + "/api/openai/files", data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _cited(text: dict) -> list[str]:
    """The files an answer's text cites, each annotation checked to frame its marker."""
    for annotation in text["annotations"]:
        assert text["value"][annotation["start_index"] : annotation["end_index"]] == annotation["text"]
    return [a["text"].split("†", 1)[1].rstrip("】") for a in text["annotations"]]


def test_the_readme_knowledge_session_cites_the_example_file_and_an_attachment(dev_server):
    base, log = dev_server
    thread = _call(base, "POST", "/api/openai/threads", {})["id"]
    path = f"/api/openai/threads/{thread}"
    _call(base, "POST", f"{path}/messages", {"role": "user", "content": "When does the museum open?"})
    run = _call(base, "POST", f"{path}/runs", {"assistant_type": "curator"})
    assert run["status"] == "completed" and {"type": "file_search"} in run["tools"]
    reply = _call(base, "GET", f"{path}/messages?limit=1")["data"][0]["content"][0]["text"]
    assert "opens at 10:00" in reply["value"] and _cited(reply) == ["museum.md"]

    note = _upload(base, "note.txt", b"The reading room closes at 16:00 on Fridays.\n")
    attachments = [{"file_id": note["id"], "tools": [{"type": "file_search"}]}]
    body = {"role": "user", "content": "When does the reading room close?", "attachments": attachments}
    assert _call(base, "POST", f"{path}/messages", body)["attachments"] == attachments
    assert _call(base, "POST", f"{path}/runs", {"assistant_type": "curator"})["status"] == "completed"
    reply = _call(base, "GET", f"{path}/messages?limit=1")["data"][0]["content"][0]["text"]
    assert "16:00 on Fridays" in reply["value"] and "note.txt" in _cited(reply)
    assert "example knowledge" in log.read_text()
