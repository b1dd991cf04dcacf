"""The record of thread vector stores: which store holds a thread's attachments, and the stores
whose upstream delete failed, with when to try again.

A mixin of `KnowledgeRecords` (its `db` and `clock`); kept apart so that each module has one job.
"""

from __future__ import annotations

import sqlalchemy as sa

from app.store.db import thread_vector_stores, vector_store_deletions

# A failed delete is tried again after this many seconds, doubled per attempt up to a day.
RETRY_FIRST_SECONDS = 30.0
RETRY_MAX_SECONDS = 24 * 3600.0


class ThreadStoreRecords:
    """Queries on the thread store tables, one short transaction each."""

    db: sa.Engine

    def thread_vector_store(self, thread_id: str) -> str | None:
        table = thread_vector_stores
        with self.db.connect() as conn:
            return conn.execute(sa.select(table.c.vector_store_id).where(table.c.thread_id == thread_id)).scalar()

    def set_thread_vector_store(self, thread_id: str, store_id: str) -> bool:
        """Record the thread's new store; False when another request recorded one first."""
        try:
            with self.db.begin() as conn:
                conn.execute(
                    thread_vector_stores.insert().values(
                        thread_id=thread_id, vector_store_id=store_id, created_at=self.clock()
                    )
                )
        except sa.exc.IntegrityError:
            return False
        return True

    def forget_thread_vector_store(self, thread_id: str) -> None:
        with self.db.begin() as conn:
            conn.execute(thread_vector_stores.delete().where(thread_vector_stores.c.thread_id == thread_id))

    def deletion_failed(self, store_id: str, thread_id: str, error: str) -> None:
        """Remember a store whose upstream delete failed (again), to be tried later with a growing pause."""
        table = vector_store_deletions
        now = self.clock()
        with self.db.begin() as conn:
            attempts = conn.execute(sa.select(table.c.attempts).where(table.c.vector_store_id == store_id)).scalar()
            pause = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (attempts or 0))
            values = dict(attempts=(attempts or 0) + 1, last_error=error[:500], next_try_at=now + pause)
            if attempts is None:
                conn.execute(table.insert().values(vector_store_id=store_id, thread_id=thread_id, **values))
            else:
                conn.execute(table.update().where(table.c.vector_store_id == store_id).values(**values))

    def deletions_due(self, limit: int) -> list[tuple[str, str]]:
        """(store ID, thread ID) of failed deletes whose next try is due, oldest first."""
        table = vector_store_deletions
        query = sa.select(table.c.vector_store_id, table.c.thread_id).where(table.c.next_try_at <= self.clock())
        with self.db.connect() as conn:
            return [tuple(row) for row in conn.execute(query.order_by(table.c.next_try_at).limit(limit))]

    def deletion_done(self, store_id: str) -> None:
        with self.db.begin() as conn:
            conn.execute(vector_store_deletions.delete().where(vector_store_deletions.c.vector_store_id == store_id))

    def pending_deletions(self) -> list[dict]:
        """Every failed delete still to be done (for operators and tests)."""
        with self.db.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(sa.select(vector_store_deletions))]
