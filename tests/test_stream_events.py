"""RunEvents, the listener of a streamed run: the order of the events, the text sent once, nothing after the end."""

from __future__ import annotations

from app.api.sse import RunEvents, error_data, frame
from app.contract import Poll
from app.runs.polling import PollSchedule, wait_for_run


def _run(status):
    return {"id": "run_1", "object": "thread.run", "thread_id": "thread_1", "assistant_id": "asst_1", "status": status}


def _message(text, status="completed"):
    content = [{"type": "text", "text": {"value": text, "annotations": []}}]
    return {"id": "msg_1", "object": "thread.message", "role": "assistant", "content": content, "status": status}


class _Statuses:
    """A listener that notes the event each status change would be."""

    def __init__(self, heard):
        self.heard = heard

    def status_changed(self, run):
        self.heard.append(f"thread.run.{run['status']}")


def _recorded():
    sent = []
    return sent, RunEvents(lambda name, data: sent.append((name, data)))


def test_statuses_are_sent_once_each_and_the_message_is_announced_before_its_text():
    sent, events = _recorded()
    events.created(_run("queued"))
    events.status_changed(_run("in_progress"))
    events.status_changed(_run("in_progress"))
    events.text_appended("msg_1", 0, "Hel")
    events.text_appended("msg_1", 0, "lo")
    events.message_completed(_message("Hello"))
    events.status_changed(_run("completed"))
    assert [name for name, _ in sent] == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.message.created",
        "thread.message.in_progress",
        "thread.message.delta",
        "thread.message.delta",
        "thread.message.completed",
        "thread.run.completed",
    ]
    created = sent[3][1]
    assert (created["id"], created["run_id"], created["thread_id"], created["assistant_id"]) == (
        "msg_1",
        "run_1",
        "thread_1",
        "asst_1",
    )
    assert created["status"] == "in_progress" and created["content"] == []


def test_the_text_not_yet_sent_goes_as_one_delta_before_the_completed_message():
    sent, events = _recorded()
    events.created(_run("in_progress"))
    events.text_appended("msg_1", 0, "Echo: ")
    events.message_completed(_message("Echo: hello world"))
    deltas = [data["delta"]["content"][0]["text"]["value"] for name, data in sent if name == "thread.message.delta"]
    assert deltas == ["Echo: ", "hello world"]


def test_an_incomplete_message_ends_with_its_own_event():
    sent, events = _recorded()
    events.created(_run("in_progress"))
    events.message_completed(_message("Ech", status="incomplete"))
    assert [name for name, _ in sent][-2:] == ["thread.message.delta", "thread.message.incomplete"]


def test_nothing_is_sent_after_the_final_run_event():
    sent, events = _recorded()
    events.created(_run("queued"))
    events.status_changed(_run("cancelled"))
    events.error(error_data("Run timeout exceeded 1 seconds", "run_timeout"))
    assert events.ended and [name for name, _ in sent][-1] == "thread.run.cancelled"


def test_an_error_ends_the_events():
    sent, events = _recorded()
    events.created(_run("in_progress"))
    events.error(error_data("boom", "upstream_error"))
    events.status_changed(_run("completed"))
    assert events.ended and sent[-1] == (
        "error",
        {"error": {"message": "boom", "type": "server_error", "code": "upstream_error", "param": None}},
    )


def test_a_frame_is_an_event_line_a_data_line_and_an_empty_line():
    assert frame("thread.run.created", {"id": "run_1"}) == 'event: thread.run.created\ndata: {"id":"run_1"}\n\n'


def test_the_wait_reports_new_active_statuses_and_leaves_the_end_to_its_caller():
    looks = iter([Poll(_run("queued")), Poll(_run("in_progress")), Poll(_run("in_progress")), Poll(_run("completed"))])
    heard = []
    result = wait_for_run(
        lambda: next(looks),
        _run("queued"),
        timeout=5,
        schedule=PollSchedule(first_ms=1, max_ms=1),
        sleep=lambda _: None,
        listener=_Statuses(heard),
    )
    assert result.run["status"] == "completed"
    assert heard == ["thread.run.in_progress"]
