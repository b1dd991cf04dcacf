"""One page of a list read from the record, with OpenAI's cursor semantics (limit, order, after, before)."""

from __future__ import annotations

import json

import sqlalchemy as sa

from app.contract import MessagePage, list_page


def cursor_page(conn, table: sa.Table, key: sa.Column, body: sa.Column, where, page: MessagePage) -> dict:
    """The rows of `table` matching `where`, ordered by `key` (unique among them), as a list
    of their JSON `body`: `page.after` / `page.before` are IDs of rows in the same list."""
    query = sa.select(body.label("body")).where(where)
    newest_first = page.order == "desc"
    # Walking "before" a cursor means walking the other way from it, then turning the page round.
    walk_backwards = page.before is not None
    for cursor, backwards in ((page.after, False), (page.before, True)):
        if cursor is None:
            continue
        position = conn.execute(sa.select(key).where(table.c.id == cursor, where)).scalar()
        if position is None:
            return list_page([], False)
        above = newest_first == backwards
        query = query.where(key > position if above else key < position)
    descending = newest_first != walk_backwards
    rows = conn.execute(query.order_by(key.desc() if descending else key.asc()).limit(page.limit + 1)).all()
    has_more = len(rows) > page.limit
    rows = rows[: page.limit]
    if walk_backwards:
        rows.reverse()
    return list_page([json.loads(row.body) for row in rows], has_more)
