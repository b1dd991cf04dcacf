"""The chat page at `/`: served only when CHAT_PAGE is on, and used in a real browser (headless
Chromium) against the app on the offline upstream, as `make run` serves it."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from app import create_app
from app.settings import load_settings
from tests.browser import ARTIFACTS, start_chromium
from tests.helpers import TOKENS, ServerThread, call, started_run_id
from tests.test_settings import _dev_environment

OFFLINE_ECHO = "[offline upstream] Echo: "
BUSY = "The assistant is still answering an earlier message in this conversation."
WAIT = 20  # seconds: the longest a step of a page may take before a test fails


# --- the settings and routes, without a browser ------------------------------------------------


def test_the_page_is_off_unless_enabled(make_app):
    off = make_app().test_client()
    answer = off.get("/")
    assert answer.status_code == 404 and answer.json == {"error": "Not found: no such route."}
    assert off.get("/chat/chat.js").status_code == 404

    on = make_app(CHAT_PAGE="true").test_client()
    with on.get("/") as page:
        assert page.status_code == 200 and page.mimetype == "text/html"
        assert b'<script src="/chat/chat.js"' in page.data
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    with on.get("/chat/chat.js") as script:
        assert script.status_code == 200 and script.mimetype == "text/javascript"
    with on.get("/chat/chat.css") as style:
        assert style.mimetype == "text/css"


def test_make_run_turns_the_page_on_unless_it_is_set():
    dev_environment = _dev_environment()
    exports, said = dev_environment({}, {})
    assert exports["CHAT_PAGE"] == "true" and "Chat page: http://127.0.0.1:3000/" in " ".join(said)
    assert "CHAT_PAGE" not in dev_environment({"CHAT_PAGE": "false"}, {})[0]
    minimal = {"OPENAI_BASE_URL": "offline", "AUTH_MODE": "none", "ASSISTANT_CURATOR_MODEL": "gpt-4o"}
    assert load_settings(minimal).chat_page is False


def test_the_assistant_types_are_listed_to_callers_only(api, make_app):
    answer = api.get("/assistant_types")
    assert answer.status_code == 200
    assert answer.json == {
        "object": "list",
        "data": [{"id": "curator", "object": "assistant_type"}, {"id": "tutor", "object": "assistant_type"}],
    }
    anonymous = api.client.get("/api/openai/assistant_types")
    assert anonymous.status_code == 401 and anonymous.json["error"].startswith("Missing credentials")


# --- the page in a browser ---------------------------------------------------------------------


def _app(tmp_path_factory, migrated_db, **env):
    """The app on the offline upstream with the page on, over a database of its own."""
    db = tmp_path_factory.mktemp("chat") / "backend.db"
    shutil.copy(migrated_db, db)
    settings = {
        "OPENAI_BASE_URL": "offline",
        "AUTH_MODE": "none",
        "CHAT_PAGE": "true",
        "ASSISTANT_CURATOR_MODEL": "gpt-4o",
        "ASSISTANT_TUTOR_MODEL": "gpt-4o-mini",
        "DATABASE_URL": f"sqlite:///{db}",
        "RUN_TIMEOUT_SECONDS": "20",
        "POLL_FIRST_MS": "50",
        "POLL_MAX_MS": "100",
        "RATELIMIT_RUNS": "off",
        "RATELIMIT_DEFAULT": "off",
        **env,
    }
    return create_app(load_settings(settings))


def _serve(app):
    server = ServerThread(app)
    server.app = app
    return server


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory, migrated_db):
    """The app as `make run` serves it with no key: offline upstream, no auth, the page on."""
    server = _serve(_app(tmp_path_factory, migrated_db))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory, migrated_db):
    """The same with AUTH_MODE=token, a deadline of 2 s and room for one waiting run."""
    tokens = ",".join(f"{user}:{token}" for user, token in TOKENS.items())
    env = {"AUTH_MODE": "token", "API_TOKENS": tokens, "RUN_TIMEOUT_SECONDS": "2", "MAX_INFLIGHT_RUNS": "1"}
    server = _serve(_app(tmp_path_factory, migrated_db, **env))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = start_chromium(tmp_path_factory.mktemp("chromium") / "chromedriver.log")
    yield driver
    driver.quit()


class Page:
    """The chat page in one browser tab, as a person uses it."""

    def __init__(self, driver, url):
        self.driver = driver
        self.url = url

    def open(self, fresh=False):
        self.driver.get(self.url + "/")
        if fresh:
            self.driver.execute_script("localStorage.clear()")
            self.driver.refresh()
        return self

    def wait(self, condition, what, within=WAIT):
        return WebDriverWait(self.driver, within, poll_frequency=0.05).until(
            lambda _: condition(), message=f"waiting for {what}"
        )

    def find(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def ready(self):
        """Wait for the assistant types to be listed."""
        self.wait(lambda: self.type_names(), "the assistant types")
        return self

    def type_names(self):
        return [o.get_attribute("value") for o in self.driver.find_elements(By.CSS_SELECTOR, "#assistant-type option")]

    def type(self, text):
        box = self.find("#message")
        box.clear()
        box.send_keys(text)

    def send(self, text):
        self.type(text)
        self.find("#send").click()

    def messages(self):
        """(role, text) of every message shown."""
        items = self.driver.find_elements(By.CSS_SELECTOR, "#conversation .message")
        return [(item.get_attribute("data-role"), item.find_element(By.CSS_SELECTOR, ".text").text) for item in items]

    def replies(self):
        return self.driver.find_elements(By.CSS_SELECTOR, "#conversation .message.assistant")

    def wait_for_reply(self, count):
        """The text of the `count`th reply, once it is done."""

        def done():
            replies = self.replies()
            return len(replies) >= count and replies[count - 1].get_attribute("data-state") == "done"

        self.wait(done, f"reply {count} to be done")
        return self.replies()[count - 1].find_element(By.CSS_SELECTOR, ".text").text

    def notice(self):
        """The error sentence the page shows, once it shows one."""
        notice = self.find("#notice")
        self.wait(lambda: notice.is_displayed() and notice.text, "an error sentence")
        return notice.text

    def thread_id(self):
        return self.driver.execute_script("return localStorage.getItem('chat.thread')")

    def box(self):
        return self.find("#message").get_attribute("value")

    def history(self):
        """(title, is the open one) of each conversation in the sidebar, top first."""
        buttons = self.driver.find_elements(By.CSS_SELECTOR, "#threads button.thread")
        return [(b.text, b.get_attribute("aria-current") == "true") for b in buttons]

    def open_conversation(self, title):
        self.driver.find_element(By.XPATH, f"//ul[@id='threads']//button[normalize-space()='{title}']").click()


def watch_reply(page):
    """Record every change of the last reply's text from now on, with the reply's mode and state."""
    page.driver.execute_script(
        """
        window.seen = [];
        new MutationObserver(() => {
          const reply = document.querySelector('#conversation .message.assistant:last-of-type');
          if (reply) window.seen.push([reply.dataset.mode, reply.dataset.state, reply.textContent.length]);
        }).observe(document.getElementById('conversation'), {subtree: true, childList: true, characterData: true});
        """
    )


def lengths_while_writing(page):
    """The distinct non-empty lengths the reply's text had before the run ended."""
    seen = page.driver.execute_script("return window.seen")
    return sorted({length for _mode, state, length in seen if state == "waiting" and length > len("Assistant")})


@pytest.fixture
def page(browser, chat_server):
    return Page(browser, chat_server.url).open(fresh=True).ready()


def test_a_message_typed_gets_its_reply_shown(page):
    assert page.type_names() == ["curator", "tutor"]
    page.send("Hello, page!")
    assert page.wait_for_reply(1) == OFFLINE_ECHO + "Hello, page!"
    assert page.messages() == [("user", "Hello, page!"), ("assistant", OFFLINE_ECHO + "Hello, page!")]
    assert page.find("#message").get_attribute("value") == ""
    assert not page.find("#notice").is_displayed()
    assert page.find("#conversation").get_attribute("aria-live") == "polite"


def test_a_second_message_goes_to_the_same_thread(page, chat_server):
    page.send("First question")
    page.wait_for_reply(1)
    thread_id = page.thread_id()
    page.send("Second question")
    assert page.wait_for_reply(2) == OFFLINE_ECHO + "Second question"
    assert page.thread_id() == thread_id
    status, _, listed = call("GET", f"{chat_server.url}/api/openai/threads/{thread_id}/messages?order=asc")
    assert status == 200
    assert [m["content"][0]["text"]["value"] for m in listed["data"]] == [
        "First question",
        OFFLINE_ECHO + "First question",
        "Second question",
        OFFLINE_ECHO + "Second question",
    ]
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "chat.png"
    assert page.driver.save_screenshot(str(screenshot))
    assert screenshot.read_bytes().startswith(b"\x89PNG")


def test_the_chosen_assistant_type_answers_and_is_remembered(page, chat_server):
    Select(page.find("#assistant-type")).select_by_value("tutor")
    page.send("Which of you?")
    page.wait_for_reply(1)
    page.open().ready()
    assert page.find("#assistant-type").get_attribute("value") == "tutor"


def test_a_message_while_a_run_is_busy_is_refused_with_a_sentence(page, chat_server):
    page.send("[fake duration=3] Take your time")
    page.wait(page.thread_id, "a thread")
    started_run_id(chat_server.app, page.thread_id(), within=WAIT)
    first_tab = page.driver.current_window_handle
    page.driver.switch_to.new_window("tab")
    try:
        other = Page(page.driver, chat_server.url).open().ready()
        other.wait(lambda: other.messages(), "the conversation to be listed")
        assert other.messages()[0] == ("user", "[fake duration=3] Take your time")
        other.send("Are you there?")
        sentence = other.notice()
        assert sentence.startswith(BUSY) and "409" not in sentence
        assert other.find("#message").get_attribute("value") == "Are you there?"  # kept, to send again
        assert [role for role, _ in other.messages()] == ["user"]
    finally:
        page.driver.close()
        page.driver.switch_to.window(first_tab)
    assert page.wait_for_reply(1) == OFFLINE_ECHO + "Take your time"


def test_the_history_lists_the_conversations_newest_first_and_switches_between_them(page, chat_server):
    page.send("The first conversation")
    first_reply = page.wait_for_reply(1)
    first = page.thread_id()
    page.find("#new-conversation").click()
    page.send("The second   conversation, whose first message is long enough to be shortened in the list")
    page.wait_for_reply(1)
    second = page.thread_id()
    second_title = "The second conversation, whose first message is long enough…"
    page.wait(lambda: page.history()[:2] == [(second_title, True), ("The first conversation", False)], "the history")
    _, _, thread = call("GET", f"{chat_server.url}/api/openai/threads/{second}")
    assert thread["metadata"] == {"title": second_title}

    page.open_conversation("The first conversation")
    page.wait(lambda: page.thread_id() == first, "the first conversation to open")
    page.wait(
        lambda: page.messages() == [("user", "The first conversation"), ("assistant", first_reply)], "its messages"
    )
    assert page.history()[:2] == [(second_title, False), ("The first conversation", True)]
    page.send("Back again")
    assert page.wait_for_reply(2) == OFFLINE_ECHO + "Back again"
    page.open().ready()
    page.wait(lambda: page.history()[:2] == [(second_title, False), ("The first conversation", True)], "the history")


def test_older_conversations_are_shown_on_request(page, chat_server):
    for index in range(21):
        call("POST", f"{chat_server.url}/api/openai/threads", {"metadata": {"title": f"Older {index:02}"}})
    page.open().ready()
    page.wait(lambda: len(page.history()) == 20, "a page of the history")
    assert [title for title, _ in page.history()][:2] == ["Older 20", "Older 19"]
    older = page.find("#older")
    assert older.is_displayed()
    older.click()
    page.wait(lambda: len(page.history()) > 20, "the older conversations")
    titles = [title for title, _ in page.history()]
    assert titles[:21] == [f"Older {index:02}" for index in range(20, -1, -1)]
    assert len(titles) == len(set(titles))


def test_a_reload_keeps_the_conversation(page):
    page.send("Remember me")
    page.wait_for_reply(1)
    thread_id = page.thread_id()
    shown = page.messages()
    page.open().ready()
    page.wait(lambda: page.messages() == shown, "the conversation to be listed again")
    assert page.thread_id() == thread_id
    page.find("#new-conversation").click()
    assert page.messages() == [] and page.thread_id() is None


def test_a_conversation_gone_from_the_server_is_said_and_replaced(page, chat_server):
    page.send("Soon gone")
    page.wait_for_reply(1)
    gone = page.thread_id()
    assert call("DELETE", f"{chat_server.url}/api/openai/threads/{gone}")[0] == 200
    page.open()
    assert page.notice().startswith("The earlier conversation no longer exists on the server.")
    assert page.messages() == [] and page.thread_id() is None
    page.send("Again")
    assert page.wait_for_reply(1) == OFFLINE_ECHO + "Again"
    assert page.thread_id() not in (None, gone)


def test_a_failed_run_reads_as_a_sentence_and_its_message_waits_in_the_box(page, chat_server):
    page.send("[fake status=failed] Fail, please")
    sentence = page.notice()
    assert sentence == "The assistant could not finish its reply. Please try again."
    page.wait(lambda: page.messages() == [], "the unanswered message to leave the conversation")
    assert page.box() == "[fake status=failed] Fail, please"  # kept, to send again
    thread_id = page.thread_id()
    listed = call("GET", f"{chat_server.url}/api/openai/threads/{thread_id}/messages")[2]
    assert listed["data"] == []  # taken out of the thread too, so a retry does not repeat it
    page.send("Now it works")
    assert page.wait_for_reply(1) == OFFLINE_ECHO + "Now it works"
    assert page.messages() == [("user", "Now it works"), ("assistant", OFFLINE_ECHO + "Now it works")]
    assert page.thread_id() == thread_id and page.box() == ""


def test_the_token_is_asked_for_confirmed_kept_and_a_timeout_reads_as_a_sentence(browser, token_server):
    page = Page(browser, token_server.url).open(fresh=True)
    assert page.notice().startswith("This server needs a valid access token.")
    assert page.type_names() == []
    assert page.find("#types-hint").text == "The assistants are listed once the server accepts your access token."
    assert page.find("#history-hint").text.startswith("Your conversations are listed once the server accepts")
    token = page.find("#token")
    assert token.is_displayed() and page.find("label[for='token']").text == "Access token"
    token.send_keys("not-a-token")
    page.find("#token-form button").click()
    page.wait(lambda: page.find("#notice").text.startswith("This server needs"), "the token to be refused")
    token.clear()
    token.send_keys(TOKENS["alice"])
    page.find("#token-form button").click()
    page.ready()
    page.wait(lambda: not page.find("#notice").is_displayed(), "the notice to go")
    assert page.find("#token-accepted").text == "Access token accepted."
    assert not page.find("#token-form").is_displayed()
    assert not page.find("#types-hint").is_displayed()
    assert page.find("#history-hint").text == "No conversations yet: your first message starts one."

    page.send("[fake duration=5] Too slow")
    # Waited for, the run's deadline is a 408; streamed, the run ends cancelled at the deadline.
    assert page.notice() in (
        "The assistant took too long to answer, so the reply was stopped. Please try again.",
        "The reply was stopped before it was finished: it was cancelled, or took too long. Please try again.",
    )
    page.wait(lambda: page.box() == "[fake duration=5] Too slow", "the message back in the box")

    page.open().ready()
    assert page.find("#token").get_attribute("value") == TOKENS["alice"]
    assert not page.find("#token-form").is_displayed() and not page.find("#token-accepted").is_displayed()
    page.wait(lambda: page.history(), "the conversation in the history")
    assert page.history()[0] == ("[fake duration=5] Too slow", True)
    assert page.messages() == []  # the unanswered message was taken back


def test_a_server_without_room_reads_as_a_sentence(browser, token_server):
    api = f"{token_server.url}/api/openai"
    alice = {"Authorization": f"Bearer {TOKENS['alice']}"}
    _, _, thread = call("POST", f"{api}/threads", {}, alice)
    message = {"role": "user", "content": "[fake duration=5] Hold the only room"}
    assert call("POST", f"{api}/threads/{thread['id']}/messages", message, alice)[0] == 200
    page = Page(browser, token_server.url).open(fresh=True)
    page.driver.execute_script("localStorage.setItem('chat.token', arguments[0])", TOKENS["bob"])
    page.open().ready()
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(call, "POST", f"{api}/threads/{thread['id']}/runs", {"assistant_type": "curator"}, alice)
        started_run_id(token_server.app, thread["id"], within=WAIT)
        page.send("Is there room?")
        assert page.notice() == "The assistant is not available right now. Please try again in a moment."
        assert held.result()[0] == 408  # the run that held the room, at its deadline
    page.wait(lambda: page.messages() == [], "the unanswered message to leave the conversation")
    assert page.box() == "Is there room?"
    # Bob's history holds his conversation only, never Alice's.
    assert [title for title, _ in page.history()] == ["Is there room?"]


# Needs a server that streams runs (`"stream": true` answered with text/event-stream). Until
# then the page falls back to waiting for the run, marks the reply data-mode="blocking", and
# this test fails on its first assertion after the reply.
def test_the_reply_streams_in_several_steps(page):
    watch_reply(page)
    page.send("[fake duration=2] Tell me a longer story, one word at a time, please")
    text = page.wait_for_reply(1)
    assert page.replies()[0].get_attribute("data-mode") == "stream", "the reply was not streamed"
    assert text == OFFLINE_ECHO + "Tell me a longer story, one word at a time, please"
    lengths = lengths_while_writing(page)
    assert len(lengths) >= 3, f"the text did not grow in steps while the run went on: {lengths}"


# --- the page's reading of an event stream, against a scripted one -----------------------------


class ScriptedStreams:
    """The app, except that `POST .../runs` with `"stream": true` answers with `events`, (name, data)
    pairs sent as server-sent events `gap` seconds apart, each frame cut in two pieces."""

    def __init__(self, app, gap=0.15):
        self.app = app
        self.gap = gap
        self.events = []

    def __call__(self, environ, start_response):
        if environ["REQUEST_METHOD"] == "POST" and environ["PATH_INFO"].endswith("/runs"):
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            if json.loads(body or b"{}").get("stream"):
                start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")])
                return self.frames(list(self.events))
            environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)

    def frames(self, events):
        for name, data in events:
            frame = f"event: {name}\ndata: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()
            yield frame[: len(frame) // 2]
            time.sleep(self.gap)
            yield frame[len(frame) // 2 :]


def run_event(status, **fields):
    return {"id": "run_scripted", "object": "thread.run", "status": status, "last_error": None, **fields}


def delta_event(text, message_id="msg_scripted"):
    part = {"index": 0, "type": "text", "text": {"value": text, "annotations": []}}
    return {"id": message_id, "object": "thread.message.delta", "delta": {"content": [part]}}


@pytest.fixture(scope="module")
def scripted_server(tmp_path_factory, migrated_db):
    """The app behind ScriptedStreams."""
    server = _serve(ScriptedStreams(_app(tmp_path_factory, migrated_db)))
    yield server
    server.stop()


def test_the_page_shows_a_scripted_stream_as_it_grows(browser, scripted_server):
    scripted_server.app.events = [
        ("thread.run.created", run_event("queued")),
        ("thread.run.in_progress", run_event("in_progress")),
        ("thread.message.delta", delta_event("Hel")),
        ("thread.message.delta", delta_event("lo, stre")),
        ("thread.message.delta", delta_event("amed ")),
        ("thread.message.delta", delta_event("world!")),
        ("thread.run.completed", run_event("completed")),
        ("done", "[DONE]"),
    ]
    page = Page(browser, scripted_server.url).open(fresh=True).ready()
    watch_reply(page)
    page.send("Stream to me")
    assert page.wait_for_reply(1) == "Hello, streamed world!"
    assert page.replies()[0].get_attribute("data-mode") == "stream"
    assert lengths_while_writing(page) == sorted(
        len("Assistant" + t) for t in ("Hel", "Hello, stre", "Hello, streamed ", "Hello, streamed world!")
    )
    assert not page.find("#notice").is_displayed()


FAILED_RUN = run_event("failed", last_error={"code": "server_error", "message": "The model broke down."})
RUN_TIMEOUT = {"error": {"message": "Run timeout exceeded 2 seconds", "type": "server_error", "code": "run_timeout"}}


@pytest.mark.parametrize(
    "end,sentence",
    [
        (("thread.run.failed", FAILED_RUN), "The assistant could not finish its reply. Please try again."),
        (("error", RUN_TIMEOUT), "The assistant took too long to answer, so the reply was stopped. Please try again."),
    ],
)
def test_a_stream_that_ends_badly_keeps_the_text_and_says_why(browser, scripted_server, end, sentence):
    scripted_server.app.events = [("thread.message.delta", delta_event("Half a rep")), end, ("done", "[DONE]")]
    page = Page(browser, scripted_server.url).open(fresh=True).ready()
    page.send("Try")
    assert page.notice() == sentence
    reply = page.replies()[0]
    assert reply.get_attribute("data-state") == "failed" and reply.text.endswith("Half a rep")


# --- a connection dropped mid-reply --------------------------------------------------------------


class CuttableProxy:
    """A TCP proxy on a free loopback port in front of `port`; `cut()` drops every connection open now
    (as a phone changing networks would), and new ones go through as before."""

    def __init__(self, port):
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.open: list[socket.socket] = []
        self.requests: list[bytes] = []  # the first bytes of each connection's first request
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.open += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source, sink, from_client):
        first = from_client
        try:
            while chunk := source.recv(65536):
                if first:
                    with self.lock:
                        self.requests.append(chunk[:4000])
                    first = False
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self):
        """Drop every connection open now."""
        with self.lock:
            dropped, self.open = self.open, []
        for s in dropped:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self):
        self.listener.close()
        self.cut()


def test_a_dropped_connection_is_reattached_and_the_reply_shown_whole(browser, chat_server):
    proxy = CuttableProxy(int(chat_server.url.rsplit(":", 1)[1]))
    try:
        page = Page(browser, proxy.url).open(fresh=True).ready()
        words = " ".join(f"word{i}" for i in range(30))
        page.send(f"[fake duration=3] {words}")
        page.wait(lambda: len(page.replies()) == 1 and "word" in page.replies()[0].text, "the first words")
        shown_before = page.replies()[0].find_element(By.CSS_SELECTOR, ".text").text
        proxy.cut()
        text = page.wait_for_reply(1)
        assert page.replies()[0].get_attribute("data-mode") == "stream"
        assert not page.find("#notice").is_displayed()
        thread_id = page.thread_id()
        _, _, listed = call("GET", f"{chat_server.url}/api/openai/threads/{thread_id}/messages?order=asc")
        stored = listed["data"][-1]["content"][0]["text"]["value"]
        assert text == stored == OFFLINE_ECHO + words  # no gap, no repeated word
        assert len(shown_before) < len(stored)  # the cut came mid-reply
        reattached = [r for r in proxy.requests if r.startswith(b"GET ") and b"/events " in r.split(b"\r\n")[0]]
        assert reattached and b"last-event-id: " in reattached[0].lower()
    finally:
        proxy.close()
