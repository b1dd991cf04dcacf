"""What the backend remembers of knowledge: who owns each file and vector store, and the
vector stores an administrator gave each assistant type."""

from __future__ import annotations

import json
import time

import sqlalchemy as sa

from app.store.db import assistant_vector_stores, files, vector_stores
from app.store.thread_stores import ThreadStoreRecords


class KnowledgeRecords(ThreadStoreRecords):
    """Queries on the knowledge tables, one short transaction each."""

    def __init__(self, engine: sa.Engine, clock=time.time):
        self.db = engine
        self.clock = clock

    # files

    def add_file(self, file: dict, owner: str) -> None:
        """Record an uploaded file (the upstream's File object) as the owner's."""
        with self.db.begin() as conn:
            row = dict(id=file["id"], owner=owner, purpose=file["purpose"], body=json.dumps(file))
            conn.execute(files.insert().values(**row))

    def file(self, file_id: str, owner: str) -> dict | None:
        """The owner's file as recorded at upload; None when it is not theirs (or unknown)."""
        with self.db.connect() as conn:
            body = conn.execute(sa.select(files.c.body).where(files.c.id == file_id, files.c.owner == owner)).scalar()
        return None if body is None else json.loads(body)

    def owns_file(self, file_id: str, owner: str) -> bool:
        return self.file(file_id, owner) is not None

    def list_files(self, owner: str, *, limit: int, order: str, after: str | None, purpose: str | None):
        """A page of the owner's files: (File objects, has_more)."""
        where = [files.c.owner == owner]
        if purpose:
            where.append(files.c.purpose == purpose)
        rows, has_more = self._page(files, where, limit, order, after, None)
        return [json.loads(row.body) for row in rows], has_more

    def forget_file(self, file_id: str) -> None:
        with self.db.begin() as conn:
            conn.execute(files.delete().where(files.c.id == file_id))

    # vector stores

    def add_vector_store(self, store_id: str, owner: str) -> None:
        with self.db.begin() as conn:
            conn.execute(vector_stores.insert().values(id=store_id, owner=owner, created_at=self.clock()))

    def vector_store_owner(self, store_id: str) -> str | None:
        with self.db.connect() as conn:
            return conn.execute(sa.select(vector_stores.c.owner).where(vector_stores.c.id == store_id)).scalar()

    def list_vector_stores(self, owner: str, *, limit: int, order: str, after: str | None, before: str | None):
        """A page of the owner's vector store IDs: (IDs, has_more)."""
        rows, has_more = self._page(vector_stores, [vector_stores.c.owner == owner], limit, order, after, before)
        return [row.id for row in rows], has_more

    def forget_vector_store(self, store_id: str) -> None:
        """Forget a deleted store, also where an assistant type named it."""
        with self.db.begin() as conn:
            conn.execute(vector_stores.delete().where(vector_stores.c.id == store_id))
            conn.execute(assistant_vector_stores.delete().where(assistant_vector_stores.c.vector_store_id == store_id))

    # the stores an administrator gave an assistant type

    def type_vector_stores(self, assistant_type: str) -> list[str]:
        table = assistant_vector_stores
        with self.db.connect() as conn:
            query = sa.select(table.c.vector_store_id).where(table.c.assistant_type == assistant_type)
            return list(conn.execute(query.order_by(table.c.position)).scalars())

    def set_type_vector_stores(self, assistant_type: str, store_ids: list[str], by: str) -> None:
        """Replace the type's stores with these, in this order."""
        table = assistant_vector_stores
        now = self.clock()
        with self.db.begin() as conn:
            conn.execute(table.delete().where(table.c.assistant_type == assistant_type))
            if store_ids:
                rows = [
                    dict(assistant_type=assistant_type, vector_store_id=s, position=i, updated_by=by, updated_at=now)
                    for i, s in enumerate(store_ids)
                ]
                conn.execute(table.insert(), rows)

    def _page(self, table, where, limit, order, after, before):
        """Rows in upload order with OpenAI's cursor semantics: (rows, has_more)."""
        query = sa.select(table).where(*where)
        newest_first = order == "desc"
        with self.db.connect() as conn:
            for cursor, backwards in ((after, False), (before, True)):
                if cursor is None:
                    continue
                seq = conn.execute(sa.select(table.c.seq).where(table.c.id == cursor, *where)).scalar()
                if seq is None:
                    return [], False
                seq_above = newest_first == backwards
                query = query.where(table.c.seq > seq if seq_above else table.c.seq < seq)
            descending = newest_first != (before is not None)
            query = query.order_by(table.c.seq.desc() if descending else table.c.seq.asc()).limit(limit + 1)
            rows = conn.execute(query).all()
        has_more = len(rows) > limit
        rows = rows[:limit]
        if before is not None:
            rows.reverse()
        return rows, has_more
