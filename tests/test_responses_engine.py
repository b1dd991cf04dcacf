"""The responses engine's reading of the upstream's rules, against a recording stand-in."""

from __future__ import annotations

from types import SimpleNamespace

from app.engines.responses import MAX_ITEMS_PER_POST, NOT_CARRIED_OUT, ResponsesEngine


class Recorder:
    def __init__(self):
        self.posts = []

    def post(self, path, body=None, *, timeout=10.0, what=""):
        self.posts.append((path, body, timeout))
        return {"object": "list", "data": body["items"]}, {}


def _run_with_calls(n):
    calls = [{"id": f"call_{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}} for i in range(n)]
    return {
        "id": "resp_1",
        "required_action": {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": calls}},
    }


def test_every_open_call_gets_an_output_at_most_twenty_per_post():
    upstream = Recorder()
    engine = ResponsesEngine(SimpleNamespace(conversations=None), upstream)
    assert engine.close_open_calls("conv_1", _run_with_calls(45), timeout=5.0) is True
    assert [len(body["items"]) for _, body, _ in upstream.posts] == [20, 20, 5]
    assert MAX_ITEMS_PER_POST == 20
    items = [item for _, body, _ in upstream.posts for item in body["items"]]
    assert [item["call_id"] for item in items] == [f"call_{i}" for i in range(45)]
    assert {(item["type"], item["output"]) for item in items} == {("function_call_output", NOT_CARRIED_OUT)}
    assert {path for path, _, _ in upstream.posts} == {"/conversations/conv_1/items"}
    assert all(0 < timeout <= 5.0 for _, _, timeout in upstream.posts)
