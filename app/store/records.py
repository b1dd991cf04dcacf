"""What the backend remembers: thread owners and locks, run snapshots, messages, idempotent answers.

The queries of a run's start and end (and of its thread's lock) are plain SQL strings on the
pool's DBAPI connections (app/store/lean.py): building an SQLAlchemy statement and its cache
key costs ~150 us of CPU per query, and a `Connection` ~25 us more per transaction (see
docs/benchmarks.md, "Where the CPU of a POST .../runs goes").
"""

from __future__ import annotations

import json
import time
from typing import NamedTuple

import sqlalchemy as sa

from app.contract import ACTIVE_STATUSES, MessagePage, list_page
from app.store.db import idempotency, messages, runs, threads
from app.store.lean import Lean
from app.store.thread_records import ThreadRecords

IDEMPOTENCY_TTL_SECONDS = 24 * 3600
# What `RecordedRun` is read from.
_RECORDED_SQL = "SELECT snapshot, finished_at, upstream_id, pending, assistant_type FROM runs"

_LOCK = "UPDATE threads SET lock_run = ?, lock_until = ? WHERE id = ? AND (lock_until IS NULL OR lock_until < ?)"
_LOCK_OWNED = _LOCK + " AND owner = ?"
_PASS_LOCK = "UPDATE threads SET lock_run = ? WHERE id = ? AND lock_run = ?"
_UNLOCK = "UPDATE threads SET lock_run = NULL, lock_until = NULL WHERE id = ? AND lock_run = ?"
# Owner, type and creation time are set once; the snapshot, status and end on every save.
_SAVE_RUN = (
    "INSERT INTO runs (id, thread_id, owner, assistant_type, status, snapshot, finished_at, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
    " snapshot = excluded.snapshot, finished_at = excluded.finished_at"
)
_ADD_MESSAGE = "INSERT INTO messages (id, thread_id, run_id, body) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"


class RecordedRun(NamedTuple):
    """A run's last recorded snapshot, whether the run had ended then, the upstream run now
    behind it (None: the same ID), what it needs to go on while it waits for the
    client's tool outputs (None when it does not), and the name of its assistant type."""

    run: dict
    final: bool
    upstream_id: str | None = None
    pending: dict | None = None
    assistant_type: str | None = None


class Records(ThreadRecords):
    """Queries on the backend's database, one short transaction each."""

    def __init__(self, engine: sa.Engine, clock=time.time):
        self.db = engine
        self.clock = clock
        self.lean = Lean(engine)

    # threads and their active-run lock

    def add_thread(self, thread_id: str, owner: str, engine: str, metadata: dict | None = None) -> None:
        with self.db.begin() as conn:
            conn.execute(
                threads.insert().values(
                    id=thread_id,
                    owner=owner,
                    engine=engine,
                    created_at=self.clock(),
                    metadata=json.dumps(metadata or {}),
                )
            )

    def thread_owner(self, thread_id: str) -> str | None:
        # Asked of the database every time: another process may have deleted the thread.
        with self.lean.transaction() as sql:
            row = sql("SELECT owner FROM threads WHERE id = ?", (thread_id,)).fetchone()
        return None if row is None else row[0]

    def forget_thread(self, thread_id: str) -> None:
        with self.db.begin() as conn:
            conn.execute(messages.delete().where(messages.c.thread_id == thread_id))
            conn.execute(runs.delete().where(runs.c.thread_id == thread_id))
            conn.execute(threads.delete().where(threads.c.id == thread_id))

    def lock_thread(self, thread_id: str, holder: str, seconds: float) -> bool:
        """Take the thread's active-run lock unless another live holder has it."""
        now = self.clock()
        with self.lean.transaction() as sql:
            return sql(_LOCK, (holder, now + seconds, thread_id, now)).rowcount == 1

    def lock_owned_thread(self, thread_id: str, owner: str, holder: str, seconds: float) -> list[RecordedRun] | None:
        """Take the lock of `owner`'s thread as `lock_thread` does, and read the thread's runs that
        wait for the client's tool outputs, in one transaction; None when the lock was not taken
        (another live holder, or not their thread)."""
        now = self.clock()
        with self.lean.transaction() as sql:
            if sql(_LOCK_OWNED, (holder, now + seconds, thread_id, now, owner)).rowcount != 1:
                return None
            rows = sql(_RECORDED_SQL + " WHERE thread_id = ? AND pending IS NOT NULL", (thread_id,)).fetchall()
        return [self._recorded(row) for row in rows]

    def unlock_thread(self, thread_id: str, holder: str) -> None:
        with self.lean.transaction() as sql:
            sql(_UNLOCK, (thread_id, holder))

    def active_run(self, thread_id: str) -> str | None:
        """The run holding the thread's lock, if the lock is still live."""
        with self.lean.transaction() as sql:
            row = sql("SELECT lock_run, lock_until FROM threads WHERE id = ?", (thread_id,)).fetchone()
        if row is None or row[1] is None or row[1] < self.clock():
            return None
        return row[0]

    # runs

    def save_run(self, run: dict, owner: str, assistant_type: str, final: bool) -> None:
        """Insert or update the run's snapshot; owner and type are set once."""
        with self.lean.transaction() as sql:
            self._save_run(sql, run, owner, assistant_type, final)

    def run_started(self, thread_id: str, holder: str, run: dict, owner: str, assistant_type: str) -> None:
        """Record a new run, and hand it the lock its request took."""
        with self.lean.transaction() as sql:
            sql(_PASS_LOCK, (run["id"], thread_id, holder))
            self._save_run(sql, run, owner, assistant_type, final=False)

    def run_ended(self, run: dict, produced: list[dict], owner: str, assistant_type: str) -> None:
        """Record the run's last snapshot and the messages it produced, and free its thread."""
        with self.lean.transaction() as sql:
            self._save_run(sql, run, owner, assistant_type, final=run["status"] not in ACTIVE_STATUSES)
            self._add_messages(sql, run["thread_id"], produced, run["id"])
            sql(_UNLOCK, (run["thread_id"], run["id"]))

    def _save_run(self, sql, run, owner, assistant_type, final) -> None:
        now = self.clock()
        params = (run["id"], run["thread_id"], owner, assistant_type, run["status"], json.dumps(run))
        sql(_SAVE_RUN, (*params, now if final else None, now))

    def run(self, run_id: str) -> RecordedRun | None:
        """What the record knows of a run."""
        with self.lean.transaction() as sql:
            row = sql(_RECORDED_SQL + " WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else self._recorded(row)

    @staticmethod
    def _recorded(row) -> RecordedRun:
        """The RecordedRun of a row of _RECORDED_SQL."""
        snapshot, finished_at, upstream_id, pending, assistant_type = row
        pending = json.loads(pending) if pending else None
        return RecordedRun(json.loads(snapshot), finished_at is not None, upstream_id, pending, assistant_type)

    def run_progress(self, run_id: str, upstream_id: str) -> None:
        """The run goes on as another upstream run (the next round of a tool loop)."""
        with self.db.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(upstream_id=upstream_id))

    def await_outputs(self, run: dict, pending: dict, owner: str, assistant_type: str, seconds: float) -> None:
        """Record a run that waits for the client's tool outputs; its thread stays locked `seconds`."""
        with self.lean.transaction() as sql:
            self._save_run(sql, run, owner, assistant_type, final=False)
            sql("UPDATE runs SET pending = ? WHERE id = ?", (json.dumps(pending), run["id"]))
            self._hold_lock(sql, run["thread_id"], run["id"], seconds)

    def take_pending(self, run_id: str, pending: dict, lock_seconds: float) -> bool:
        """Take the run's wait for tool outputs for one answer; False if someone else took it first.

        The thread's lock is then held for `lock_seconds` more, for the run's next wait.
        """
        with self.lean.transaction() as sql:
            taken = sql("UPDATE runs SET pending = NULL WHERE id = ? AND pending = ?", (run_id, json.dumps(pending)))
            if taken.rowcount != 1:
                return False
            (thread_id,) = sql("SELECT thread_id FROM runs WHERE id = ?", (run_id,)).fetchone()
            self._hold_lock(sql, thread_id, run_id, lock_seconds)
            return True

    def waiting_runs(self, thread_id: str) -> list[RecordedRun]:
        """The thread's runs that wait for the client's tool outputs."""
        with self.lean.transaction() as sql:
            rows = sql(_RECORDED_SQL + " WHERE thread_id = ? AND pending IS NOT NULL", (thread_id,)).fetchall()
        return [self._recorded(row) for row in rows]

    def _hold_lock(self, sql, thread_id: str, holder: str, seconds: float) -> None:
        until = self.clock() + seconds
        sql("UPDATE threads SET lock_until = ? WHERE id = ? AND lock_run = ?", (until, thread_id, holder))

    # messages

    def add_messages(self, thread_id: str, items: list[dict], run_id: str | None = None) -> None:
        if items:
            with self.lean.transaction() as sql:
                self._add_messages(sql, thread_id, items, run_id)

    @staticmethod
    def _add_messages(sql, thread_id: str, items: list[dict], run_id: str | None) -> None:
        """Insert the messages the record does not know yet (by ID); the known ones stay as they are."""
        if items:
            sql(_ADD_MESSAGE, [(m["id"], thread_id, run_id or m.get("run_id"), json.dumps(m)) for m in items])

    def complete_messages(self, thread_id: str, listed: list[dict]) -> list[dict]:
        """Upstream messages with what the record knows of them; unknown ones are learned now."""
        if not listed:
            return listed
        ids = [m["id"] for m in listed]
        with self.lean.transaction() as sql:
            rows = sql(f"SELECT id, body FROM messages WHERE id IN ({', '.join('?' * len(ids))})", tuple(ids))
            known = {message_id: json.loads(body) for message_id, body in rows.fetchall()}
        unknown = [dict(m, created_at=int(self.clock())) for m in listed if m["id"] not in known]
        self.add_messages(thread_id, unknown)
        known.update((m["id"], m) for m in unknown)
        return [known[m["id"]] for m in listed]

    def list_messages(self, thread_id: str, page: MessagePage) -> dict:
        """A message list answered from the record, with OpenAI's cursor semantics."""
        query = sa.select(messages.c.seq, messages.c.body).where(messages.c.thread_id == thread_id)
        if page.run_id:
            query = query.where(messages.c.run_id == page.run_id)
        newest_first = page.order == "desc"
        with self.db.connect() as conn:
            # Walking "before" a cursor means walking the other way from it, then turning the page round.
            walk_backwards = page.before is not None
            for cursor, backwards in ((page.after, False), (page.before, True)):
                if cursor is None:
                    continue
                seq = conn.execute(
                    sa.select(messages.c.seq).where(messages.c.id == cursor, messages.c.thread_id == thread_id)
                ).scalar()
                if seq is None:
                    return list_page([], False)
                seq_above = newest_first == backwards
                query = query.where(messages.c.seq > seq if seq_above else messages.c.seq < seq)
            descending = newest_first != walk_backwards
            query = query.order_by(messages.c.seq.desc() if descending else messages.c.seq.asc()).limit(page.limit + 1)
            rows = conn.execute(query).all()
        has_more = len(rows) > page.limit
        rows = rows[: page.limit]
        if walk_backwards:
            rows.reverse()
        data = [json.loads(r.body) for r in rows]
        return list_page(data, has_more)

    # idempotency keys

    def claim_idempotency_key(self, owner: str, key: str, fingerprint: str, abandoned_after: float) -> dict | None:
        """Claim the key for a new request, or return what its first use recorded.

        The returned dict has `fingerprint`, and `status_code`, `body`, `headers` once the
        first request has finished (status_code None while it is still running). A claim
        older than `abandoned_after` seconds with no answer was left by a crashed process.
        """
        now = self.clock()
        with self.db.begin() as conn:
            conn.execute(idempotency.delete().where(idempotency.c.created_at < now - IDEMPOTENCY_TTL_SECONDS))
            conn.execute(
                idempotency.delete().where(
                    idempotency.c.status_code.is_(None), idempotency.c.created_at < now - abandoned_after
                )
            )
            row = conn.execute(
                sa.select(idempotency).where(idempotency.c.owner == owner, idempotency.c.key == key)
            ).first()
            if row is not None:
                return dict(row._mapping)
            try:
                with conn.begin_nested():
                    conn.execute(
                        idempotency.insert().values(owner=owner, key=key, fingerprint=fingerprint, created_at=now)
                    )
            except sa.exc.IntegrityError:
                return {"fingerprint": fingerprint, "status_code": None, "body": None, "headers": None}
        return None

    def finish_idempotency_key(self, owner: str, key: str, status_code: int, body: str, headers: dict) -> None:
        with self.db.begin() as conn:
            conn.execute(
                idempotency.update()
                .where(idempotency.c.owner == owner, idempotency.c.key == key)
                .values(status_code=status_code, body=body, headers=json.dumps(headers))
            )

    def release_idempotency_key(self, owner: str, key: str) -> None:
        """Forget a key whose request could not be answered, so that a retry may run."""
        with self.db.begin() as conn:
            conn.execute(idempotency.delete().where(idempotency.c.owner == owner, idempotency.c.key == key))

    def ping(self) -> None:
        with self.db.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

