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
from app.store.db import idempotency, messages, run_steps, runs, threads
from app.store.lean import Lean
from app.store.pages import cursor_page
from app.store.thread_records import ThreadRecords

IDEMPOTENCY_TTL_SECONDS = 24 * 3600
# What `RecordedRun` is read from.
_LOCK_COLUMNS = (
    threads.c.lock_run,
    threads.c.lock_until,
    threads.c.lock_host,
    threads.c.lock_pid,
    threads.c.lock_started,
    threads.c.lock_beat,
)
_LockRow = NamedTuple(
    "_LockRow",
    [(c.name, object) for c in _LOCK_COLUMNS],
)
_MINE = "lock_host = ? AND lock_pid = ? AND lock_started = ?"
_LOCKS_OF_OTHERS = (
    "SELECT id, lock_run, lock_until, lock_host, lock_pid, lock_started, lock_beat FROM threads"
    " WHERE lock_pid IS NOT NULL AND lock_until >= ? AND (lock_host = ? OR lock_beat < ?)"
    f" AND NOT ({_MINE})"
)
_BEAT = f"UPDATE threads SET lock_beat = ? WHERE {_MINE} AND lock_run IS NOT NULL"
_NO_PROCESS = dict(lock_host=None, lock_pid=None, lock_started=None, lock_beat=None)
_RECORDED_SQL = "SELECT snapshot, finished_at, upstream_id, pending, assistant_type, owner FROM runs"

_FREE = "(lock_until IS NULL OR lock_until < ?)"
_HELD_BY = "lock_host = ?, lock_pid = ?, lock_started = ?, lock_beat = ?"
_LOCK_OWNED = f"UPDATE threads SET lock_run = ?, lock_until = ?, {_HELD_BY} WHERE id = ? AND owner = ? AND {_FREE}"
_PASS_LOCK = "UPDATE threads SET lock_run = ? WHERE id = ? AND lock_run = ?"
_UNLOCK = (
    "UPDATE threads SET lock_run = NULL, lock_until = NULL, lock_host = NULL, lock_pid = NULL,"
    " lock_started = NULL, lock_beat = NULL WHERE id = ? AND lock_run = ?"
)
# Owner, type and creation time are set once; the snapshot, status and end on every save.
_SAVE_RUN = (
    "INSERT INTO runs (id, thread_id, owner, assistant_type, status, snapshot, finished_at, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
    " snapshot = excluded.snapshot, finished_at = excluded.finished_at"
)
_SAVE_STEP = (
    "INSERT INTO run_steps (id, run_id, thread_id, body) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET body = excluded.body"
)
_ADD_MESSAGE = "INSERT INTO messages (id, thread_id, run_id, body) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"


class ProcessId(NamedTuple):
    """A process, told apart from a later one with the same pid: its host, pid and start time."""

    host: str
    pid: int
    started: int


class ThreadLock(NamedTuple):
    """Who holds a thread's lock: the run (or a starting request), until when, the process
    (None when the record holds it for a run waiting for tool outputs) and its last heartbeat."""

    run: str
    until: float
    process: ProcessId | None
    beat: float | None


class RecordedRun(NamedTuple):
    """A run's last recorded snapshot, whether the run had ended then, the upstream run now
    behind it (None: the same ID), what it needs to go on while it waits for the
    client's tool outputs (None when it does not), and the name of its assistant type."""

    run: dict
    final: bool
    upstream_id: str | None = None
    pending: dict | None = None
    assistant_type: str | None = None
    owner: str | None = None


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

    def owner_and_newest_messages(self, thread_id: str, count: int) -> tuple[str | None, dict[str, str]]:
        """The thread's owner and its `count` newest recorded messages (ID -> JSON), in one read."""
        with self.lean.transaction() as sql:
            row = sql("SELECT owner FROM threads WHERE id = ?", (thread_id,)).fetchone()
            if row is None or not count:
                return (None if row is None else row[0]), {}
            newest = sql(
                "SELECT id, body FROM messages WHERE thread_id = ? ORDER BY seq DESC LIMIT ?", (thread_id, count)
            )
            return row[0], dict(newest.fetchall())

    def forget_thread(self, thread_id: str) -> None:
        with self.db.begin() as conn:
            conn.execute(messages.delete().where(messages.c.thread_id == thread_id))
            conn.execute(run_steps.delete().where(run_steps.c.thread_id == thread_id))
            conn.execute(runs.delete().where(runs.c.thread_id == thread_id))
            conn.execute(threads.delete().where(threads.c.id == thread_id))

    def lock_thread(self, thread_id: str, holder: str, seconds: float, process: ProcessId | None = None) -> bool:
        """Take the thread's active-run lock unless another live holder has it; `process` is
        the one that holds it (and beats for it), None for the record itself."""
        now = self.clock()
        free = sa.or_(threads.c.lock_until.is_(None), threads.c.lock_until < now)
        with self.db.begin() as conn:
            taken = conn.execute(
                threads.update()
                .where(threads.c.id == thread_id, free)
                .values(lock_run=holder, lock_until=now + seconds, **self._held_by(process, now))
            )
            return taken.rowcount == 1

    @staticmethod
    def _held_by(process: ProcessId | None, now: float) -> dict:
        if process is None:
            return dict(_NO_PROCESS)
        return dict(lock_host=process.host, lock_pid=process.pid, lock_started=process.started, lock_beat=now)

    def thread_lock(self, thread_id: str) -> ThreadLock | None:
        """The thread's lock while it is live, with its holder; None when the thread is free."""
        with self.db.connect() as conn:
            row = conn.execute(sa.select(*_LOCK_COLUMNS).where(threads.c.id == thread_id)).first()
        return self._lock_of(row)

    def _lock_of(self, row) -> ThreadLock | None:
        if row is None or row.lock_run is None or row.lock_until is None or row.lock_until < self.clock():
            return None
        process = None
        if row.lock_pid is not None:
            process = ProcessId(row.lock_host, row.lock_pid, row.lock_started)
        return ThreadLock(row.lock_run, row.lock_until, process, row.lock_beat)

    def locks_held_by_others(self, process: ProcessId, beat_before: float) -> list[tuple[str, ThreadLock]]:
        """Live locks held by another process that is on this host, or whose heartbeat is older
        than `beat_before`: the ones whose holder may be dead."""
        with self.lean.transaction() as sql:  # every few seconds in each process: plain SQL
            rows = sql(_LOCKS_OF_OTHERS, (self.clock(), process.host, beat_before, *process)).fetchall()
        return [(row[0], lock) for row in rows if (lock := self._lock_of(_LockRow(*row[1:]))) is not None]

    def beat(self, process: ProcessId) -> int:
        """Refresh the heartbeat of every lock `process` holds (one UPDATE); how many it holds."""
        with self.lean.transaction() as sql:
            return sql(_BEAT, (self.clock(), *process)).rowcount

    def take_over(self, thread_id: str, dead: ThreadLock, process: ProcessId, seconds: float) -> bool:
        """Take the lock a dead process held, unless it changed meanwhile (another process was first)."""
        now = self.clock()
        with self.db.begin() as conn:
            taken = conn.execute(
                threads.update()
                .where(
                    threads.c.id == thread_id,
                    threads.c.lock_run == dead.run,
                    threads.c.lock_pid == dead.process.pid,
                    threads.c.lock_started == dead.process.started,
                    threads.c.lock_host == dead.process.host,
                )
                .values(lock_until=now + seconds, **self._held_by(process, now))
            )
            return taken.rowcount == 1

    def together(self):
        """A block whose queries on this database are one transaction (Lean.together)."""
        return self.lean.together()

    def lock_owned_thread(
        self, thread_id: str, owner: str, holder: str, seconds: float, process: ProcessId | None = None
    ) -> list[RecordedRun] | None:
        """Take the lock of `owner`'s thread as `lock_thread` does, and read the thread's runs that
        wait for the client's tool outputs, in one transaction; None when the lock was not taken
        (another live holder, or not their thread)."""
        now = self.clock()
        held_by = tuple(self._held_by(process, now).values())
        with self.lean.transaction() as sql:
            if sql(_LOCK_OWNED, (holder, now + seconds, *held_by, thread_id, owner, now)).rowcount != 1:
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
        snapshot, finished_at, upstream_id, pending, assistant_type, owner = row
        pending = json.loads(pending) if pending else None
        return RecordedRun(json.loads(snapshot), finished_at is not None, upstream_id, pending, assistant_type, owner)

    def run_progress(self, run_id: str, upstream_id: str) -> None:
        """The run goes on as another upstream run (the next round of a tool loop)."""
        with self.db.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(upstream_id=upstream_id))

    def await_outputs(self, run: dict, pending: dict, owner: str, assistant_type: str, seconds: float) -> None:
        """Record a run that waits for the client's tool outputs; its thread stays locked `seconds`."""
        with self.lean.transaction() as sql:
            self._save_run(sql, run, owner, assistant_type, final=False)
            sql("UPDATE runs SET pending = ? WHERE id = ?", (json.dumps(pending), run["id"]))
            self._hold_lock(sql, run["thread_id"], run["id"], seconds, None)

    def take_pending(self, run_id: str, pending: dict, lock_seconds: float, process: ProcessId | None = None) -> bool:
        """Take the run's wait for tool outputs for one answer; False if someone else took it first.

        The thread's lock is then held for `lock_seconds` more, for the run's next wait, by `process`.
        """
        with self.lean.transaction() as sql:
            taken = sql("UPDATE runs SET pending = NULL WHERE id = ? AND pending = ?", (run_id, json.dumps(pending)))
            if taken.rowcount != 1:
                return False
            (thread_id,) = sql("SELECT thread_id FROM runs WHERE id = ?", (run_id,)).fetchone()
            self._hold_lock(sql, thread_id, run_id, lock_seconds, process)
            return True

    def waiting_runs(self, thread_id: str) -> list[RecordedRun]:
        """The thread's runs that wait for the client's tool outputs."""
        with self.lean.transaction() as sql:
            rows = sql(_RECORDED_SQL + " WHERE thread_id = ? AND pending IS NOT NULL", (thread_id,)).fetchall()
        return [self._recorded(row) for row in rows]

    def _hold_lock(self, sql, thread_id: str, holder: str, seconds: float, process: ProcessId | None) -> None:
        now = self.clock()
        held_by = tuple(self._held_by(process, now).values())
        statement = f"UPDATE threads SET lock_until = ?, {_HELD_BY} WHERE id = ? AND lock_run = ?"
        sql(statement, (now + seconds, *held_by, thread_id, holder))

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

    def complete_messages(self, thread_id: str, listed: list[dict], read: dict[str, str] | None = None) -> list[dict]:
        """Upstream messages with what the record knows of them; unknown ones are learned now.
        `read`: records already read (ID -> JSON), which the record is not asked for again."""
        if not listed:
            return listed
        read = read or {}
        known = {m["id"]: json.loads(read[m["id"]]) for m in listed if m["id"] in read}
        ids = [m["id"] for m in listed if m["id"] not in known]
        if ids:
            with self.lean.transaction() as sql:
                rows = sql(f"SELECT id, body FROM messages WHERE id IN ({', '.join('?' * len(ids))})", tuple(ids))
                known.update((message_id, json.loads(body)) for message_id, body in rows.fetchall())
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

    def list_runs(self, thread_id: str, page: MessagePage) -> dict:
        """The thread's recorded runs, a page of them, by creation."""
        with self.db.connect() as conn:
            return cursor_page(conn, runs, runs.c.created_at, runs.c.snapshot, runs.c.thread_id == thread_id, page)

    # run steps

    def save_step(self, step: dict) -> None:
        """Insert or update a run step; its place in the run's list is set when first saved."""
        with self.lean.transaction() as sql:
            sql(_SAVE_STEP, (step["id"], step["run_id"], step["thread_id"], json.dumps(step)))

    def step(self, run_id: str, step_id: str) -> dict | None:
        with self.lean.transaction() as sql:
            row = sql("SELECT body FROM run_steps WHERE id = ? AND run_id = ?", (step_id, run_id)).fetchone()
        return None if row is None else json.loads(row[0])

    def newest_step(self, run_id: str) -> dict | None:
        """The run's last step, if it has any (asked at every run's end: plain SQL)."""
        with self.lean.transaction() as sql:
            row = sql("SELECT body FROM run_steps WHERE run_id = ? ORDER BY seq DESC LIMIT 1", (run_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def list_steps(self, run_id: str, page: MessagePage) -> dict:
        """The run's steps, a page of them, in their order of creation."""
        with self.db.connect() as conn:
            return cursor_page(conn, run_steps, run_steps.c.seq, run_steps.c.body, run_steps.c.run_id == run_id, page)

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
