"""The record's thread list, and the changes a client makes to recorded threads and messages.

A mixin of `Records` (its `db` and `clock`); kept apart so that each module has one job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import sqlalchemy as sa

from app.contract import list_page
from app.store.db import messages, threads


@dataclass(frozen=True)
class ThreadPage:
    """Arguments of a thread list, already validated."""

    limit: int = 20
    order: str = "desc"
    after: str | None = None
    before: str | None = None


def _thread(row) -> dict:
    """A recorded thread in the Assistants shape."""
    return {
        "id": row.id,
        "object": "thread",
        "created_at": int(row.created_at),
        "metadata": json.loads(row.metadata) if row.metadata else {},
        "tool_resources": {},
    }


def _beyond(row, above: bool):
    """The threads after `row` in (created_at, id) order (`above`), or before it."""
    created, same = threads.c.created_at, threads.c.created_at == row.created_at
    if above:
        return sa.or_(created > row.created_at, sa.and_(same, threads.c.id > row.id))
    return sa.or_(created < row.created_at, sa.and_(same, threads.c.id < row.id))


class ThreadRecords:
    """Queries for the thread list and for edits of threads and messages, one transaction each."""

    db: sa.Engine

    def set_thread_metadata(self, thread_id: str, metadata: dict | None) -> None:
        with self.db.begin() as conn:
            conn.execute(threads.update().where(threads.c.id == thread_id).values(metadata=json.dumps(metadata or {})))

    def list_threads(self, owner: str, page: ThreadPage) -> dict:
        """The owner's threads, newest first by default, with OpenAI's cursor semantics."""
        columns = (threads.c.id, threads.c.created_at, threads.c["metadata"])
        query = sa.select(*columns).where(threads.c.owner == owner)
        newest_first = page.order == "desc"
        with self.db.connect() as conn:
            for cursor, backwards in ((page.after, False), (page.before, True)):
                if cursor is None:
                    continue
                row = conn.execute(
                    sa.select(threads.c.id, threads.c.created_at).where(
                        threads.c.id == cursor, threads.c.owner == owner
                    )
                ).first()
                if row is None:
                    return list_page([], False)
                query = query.where(_beyond(row, above=newest_first == backwards))
            # Walking "before" a cursor means walking the other way from it, then turning the page round.
            descending = newest_first != (page.before is not None)
            keys = (threads.c.created_at, threads.c.id)
            query = query.order_by(*(k.desc() if descending else k.asc() for k in keys)).limit(page.limit + 1)
            rows = conn.execute(query).all()
        has_more = len(rows) > page.limit
        rows = rows[: page.limit]
        if page.before is not None:
            rows.reverse()
        return list_page([_thread(row) for row in rows], has_more)

    def message_thread(self, message_id: str) -> str | None:
        """The thread a recorded message belongs to (None when the record does not know it)."""
        with self.db.connect() as conn:
            return conn.execute(sa.select(messages.c.thread_id).where(messages.c.id == message_id)).scalar()

    def save_message(self, thread_id: str, message: dict) -> None:
        """Record the message as it is now, whether or not the record knew it."""
        with self.db.begin() as conn:
            updated = conn.execute(
                messages.update().where(messages.c.id == message["id"]).values(body=json.dumps(message))
            )
            if updated.rowcount == 0:
                conn.execute(
                    messages.insert().values(
                        id=message["id"], thread_id=thread_id, run_id=message.get("run_id"), body=json.dumps(message)
                    )
                )

    def forget_message(self, message_id: str) -> None:
        with self.db.begin() as conn:
            conn.execute(messages.delete().where(messages.c.id == message_id))
