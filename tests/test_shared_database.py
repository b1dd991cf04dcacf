"""Two processes on one database: what one deletes, the other no longer serves."""

from __future__ import annotations

from app import create_app
from app.settings import load_settings
from tests.helpers import TOKENS, Api


def _two_workers(base_env):
    """Two app instances on the same SQLite file and upstream, as two gunicorn workers would be."""
    return [Api(create_app(load_settings(base_env)).test_client(), TOKENS["alice"]) for _ in range(2)]


def test_a_thread_deleted_by_another_worker_is_404_here(base_env, fake):
    first, second = _two_workers(base_env)
    thread = first.new_thread()
    first.say(thread, "hello [fake duration=0.05]")
    assert second.get(f"/threads/{thread}/messages").status_code == 200  # the second worker has seen the thread
    assert first.delete(f"/threads/{thread}").status_code == 200

    calls = sum(fake.stats()["requests"].values())
    run = second.run(thread)
    assert run.status_code == 404, run.json
    assert run.json == {"error": f"No thread found with id '{thread}'."}
    message = second.post(f"/threads/{thread}/messages", json={"role": "user", "content": "again"})
    assert message.status_code == 404
    assert second.get(f"/threads/{thread}/messages?before=msg_x").status_code == 404
    assert sum(fake.stats()["requests"].values()) == calls  # refused here, not by the upstream
