"""What the backend remembers: thread owners and locks, run snapshots, messages, idempotent answers."""

from __future__ import annotations

import json
import time
from typing import NamedTuple

import sqlalchemy as sa

from app.contract import ACTIVE_STATUSES, MessagePage, list_page
from app.store.db import idempotency, messages, run_steps, runs, threads
from app.store.pages import cursor_page
from app.store.thread_records import ThreadRecords

IDEMPOTENCY_TTL_SECONDS = 24 * 3600
# What `RecordedRun` is read from.
_RECORDED_COLUMNS = (
    runs.c.snapshot,
    runs.c.finished_at,
    runs.c.upstream_id,
    runs.c.pending,
    runs.c.assistant_type,
    runs.c.owner,
)
_LOCK_COLUMNS = (
    threads.c.lock_run,
    threads.c.lock_until,
    threads.c.lock_host,
    threads.c.lock_pid,
    threads.c.lock_started,
    threads.c.lock_beat,
)
_NO_PROCESS = dict(lock_host=None, lock_pid=None, lock_started=None, lock_beat=None)


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
        with self.db.connect() as conn:
            return conn.execute(sa.select(threads.c.owner).where(threads.c.id == thread_id)).scalar()

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
        mine = sa.and_(
            threads.c.lock_host == process.host,
            threads.c.lock_pid == process.pid,
            threads.c.lock_started == process.started,
        )
        suspect = sa.or_(threads.c.lock_host == process.host, threads.c.lock_beat < beat_before)
        query = sa.select(threads.c.id, *_LOCK_COLUMNS).where(
            threads.c.lock_pid.is_not(None), threads.c.lock_until >= self.clock(), suspect, sa.not_(mine)
        )
        with self.db.connect() as conn:
            rows = conn.execute(query).all()
        return [(row.id, lock) for row in rows if (lock := self._lock_of(row)) is not None]

    def beat(self, process: ProcessId) -> int:
        """Refresh the heartbeat of every lock `process` holds (one UPDATE); how many it holds."""
        with self.db.begin() as conn:
            beaten = conn.execute(
                threads.update()
                .where(
                    threads.c.lock_host == process.host,
                    threads.c.lock_pid == process.pid,
                    threads.c.lock_started == process.started,
                    threads.c.lock_run.is_not(None),
                )
                .values(lock_beat=self.clock())
            )
            return beaten.rowcount

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

    def unlock_thread(self, thread_id: str, holder: str) -> None:
        with self.db.begin() as conn:
            self._unlock(conn, thread_id, holder)

    @staticmethod
    def _unlock(conn, thread_id: str, holder: str) -> None:
        conn.execute(
            threads.update()
            .where(threads.c.id == thread_id, threads.c.lock_run == holder)
            .values(lock_run=None, lock_until=None, **_NO_PROCESS)
        )

    def active_run(self, thread_id: str) -> str | None:
        """The run holding the thread's lock, if the lock is still live."""
        with self.db.connect() as conn:
            row = conn.execute(
                sa.select(threads.c.lock_run, threads.c.lock_until).where(threads.c.id == thread_id)
            ).first()
        if row is None or row.lock_until is None or row.lock_until < self.clock():
            return None
        return row.lock_run

    # runs

    def save_run(self, run: dict, owner: str, assistant_type: str, final: bool) -> None:
        """Insert or update the run's snapshot; owner and type are set once."""
        with self.db.begin() as conn:
            self._save_run(conn, run, owner, assistant_type, final)

    def run_started(self, thread_id: str, holder: str, run: dict, owner: str, assistant_type: str) -> None:
        """Record a new run, and hand it the lock its request took."""
        with self.db.begin() as conn:
            conn.execute(
                threads.update()
                .where(threads.c.id == thread_id, threads.c.lock_run == holder)
                .values(lock_run=run["id"])
            )
            self._save_run(conn, run, owner, assistant_type, final=False)

    def run_ended(self, run: dict, produced: list[dict], owner: str, assistant_type: str) -> None:
        """Record the run's last snapshot and the messages it produced, and free its thread."""
        with self.db.begin() as conn:
            self._save_run(conn, run, owner, assistant_type, final=run["status"] not in ACTIVE_STATUSES)
            self._add_messages(conn, run["thread_id"], produced, run["id"])
            self._unlock(conn, run["thread_id"], run["id"])

    def _save_run(self, conn, run, owner, assistant_type, final) -> None:
        values = dict(status=run["status"], snapshot=json.dumps(run), finished_at=self.clock() if final else None)
        updated = conn.execute(runs.update().where(runs.c.id == run["id"]).values(**values))
        if updated.rowcount == 0:
            conn.execute(
                runs.insert().values(
                    id=run["id"],
                    thread_id=run["thread_id"],
                    owner=owner,
                    assistant_type=assistant_type,
                    created_at=self.clock(),
                    **values,
                )
            )

    def run(self, run_id: str) -> RecordedRun | None:
        """What the record knows of a run."""
        with self.db.connect() as conn:
            row = conn.execute(sa.select(*_RECORDED_COLUMNS).where(runs.c.id == run_id)).first()
        return None if row is None else self._recorded(row)

    @staticmethod
    def _recorded(row) -> RecordedRun:
        pending = json.loads(row.pending) if row.pending else None
        return RecordedRun(
            json.loads(row.snapshot),
            row.finished_at is not None,
            row.upstream_id,
            pending,
            row.assistant_type,
            row.owner,
        )

    def run_progress(self, run_id: str, upstream_id: str) -> None:
        """The run goes on as another upstream run (the next round of a tool loop)."""
        with self.db.begin() as conn:
            conn.execute(runs.update().where(runs.c.id == run_id).values(upstream_id=upstream_id))

    def await_outputs(self, run: dict, pending: dict, owner: str, assistant_type: str, seconds: float) -> None:
        """Record a run that waits for the client's tool outputs; its thread stays locked `seconds`."""
        with self.db.begin() as conn:
            self._save_run(conn, run, owner, assistant_type, final=False)
            conn.execute(runs.update().where(runs.c.id == run["id"]).values(pending=json.dumps(pending)))
            self._hold_lock(conn, run["thread_id"], run["id"], seconds, None)

    def take_pending(self, run_id: str, pending: dict, lock_seconds: float, process: ProcessId | None = None) -> bool:
        """Take the run's wait for tool outputs for one answer; False if someone else took it first.

        The thread's lock is then held for `lock_seconds` more, for the run's next wait, by `process`.
        """
        with self.db.begin() as conn:
            taken = conn.execute(
                runs.update().where(runs.c.id == run_id, runs.c.pending == json.dumps(pending)).values(pending=None)
            )
            if taken.rowcount != 1:
                return False
            thread_id = conn.execute(sa.select(runs.c.thread_id).where(runs.c.id == run_id)).scalar()
            self._hold_lock(conn, thread_id, run_id, lock_seconds, process)
            return True

    def waiting_runs(self, thread_id: str) -> list[RecordedRun]:
        """The thread's runs that wait for the client's tool outputs."""
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.select(*_RECORDED_COLUMNS).where(runs.c.thread_id == thread_id, runs.c.pending.is_not(None))
            ).all()
        return [self._recorded(row) for row in rows]

    def _hold_lock(self, conn, thread_id: str, holder: str, seconds: float, process: ProcessId | None) -> None:
        now = self.clock()
        conn.execute(
            threads.update()
            .where(threads.c.id == thread_id, threads.c.lock_run == holder)
            .values(lock_until=now + seconds, **self._held_by(process, now))
        )

    # messages

    def add_messages(self, thread_id: str, items: list[dict], run_id: str | None = None) -> None:
        with self.db.begin() as conn:
            self._add_messages(conn, thread_id, items, run_id)

    @staticmethod
    def _add_messages(conn, thread_id: str, items: list[dict], run_id: str | None) -> None:
        if not items:
            return
        known = set(conn.execute(sa.select(messages.c.id).where(messages.c.id.in_([m["id"] for m in items]))).scalars())
        fresh = [m for m in items if m["id"] not in known]
        if fresh:
            conn.execute(
                messages.insert(),
                [
                    dict(id=m["id"], thread_id=thread_id, run_id=run_id or m.get("run_id"), body=json.dumps(m))
                    for m in fresh
                ],
            )

    def complete_messages(self, thread_id: str, listed: list[dict]) -> list[dict]:
        """Upstream messages with what the record knows of them; unknown ones are learned now."""
        if not listed:
            return listed
        with self.db.connect() as conn:
            rows = conn.execute(
                sa.select(messages.c.id, messages.c.body).where(messages.c.id.in_([m["id"] for m in listed]))
            )
            known = {row.id: json.loads(row.body) for row in rows}
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
        body = json.dumps(step)
        with self.db.begin() as conn:
            updated = conn.execute(run_steps.update().where(run_steps.c.id == step["id"]).values(body=body))
            if updated.rowcount == 0:
                conn.execute(
                    run_steps.insert().values(
                        id=step["id"], run_id=step["run_id"], thread_id=step["thread_id"], body=body
                    )
                )

    def step(self, run_id: str, step_id: str) -> dict | None:
        with self.db.connect() as conn:
            body = conn.execute(
                sa.select(run_steps.c.body).where(run_steps.c.id == step_id, run_steps.c.run_id == run_id)
            ).scalar()
        return None if body is None else json.loads(body)

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
