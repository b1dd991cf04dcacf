"""The usage table: one row per upstream run or response that ended, and the sums read from it.

A row is keyed by the upstream's own ID and inserted at most once (insert-or-ignore),
so a retried wait, a re-read of a finished run or a recovered run never counts twice,
whichever process or instance records it.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import sqlalchemy as sa

from app.store.db import metadata, runs
from app.store.lean import Lean

KINDS = ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens")

usage = sa.Table(
    "usage",
    metadata,
    sa.Column("upstream_id", sa.String(128), primary_key=True),
    sa.Column("run_id", sa.String(128)),  # the run its client knows
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("assistant_type", sa.String(64), nullable=False),
    sa.Column("model", sa.String(128), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("day", sa.String(10), nullable=False),  # YYYY-MM-DD in BUDGET_TIMEZONE
    sa.Column("month", sa.String(7), nullable=False),  # YYYY-MM
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("cached_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
    sa.Column("total_tokens", sa.BigInteger, nullable=False),
    sa.Column("recorded_at", sa.Float, nullable=False),
    sa.Index("usage_owner_month", "owner", "month"),
    sa.Index("usage_month", "month"),
)


class UsageRow(NamedTuple):
    """Sums of one owner's tokens of one type, model and day."""

    owner: str
    assistant_type: str
    model: str
    day: str
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    reasoning_tokens: int
    total_tokens: int


class UsageStore:
    """Queries on the usage table, one short transaction each."""

    def __init__(self, engine: sa.Engine):
        self.db = engine

    def add(self, values: dict) -> bool:
        """Insert the row unless one with its upstream ID exists; whether it was inserted."""
        # Plain SQL on the pool's connection (app/store/lean.py): an SQLAlchemy insert costs ~150 us
        # of CPU to build, on every run's end.
        columns = tuple(values)
        statement = _insert_sql(columns)
        with Lean(self.db).transaction() as sql:
            return sql(statement, tuple(values[c] for c in columns)).rowcount == 1

    def month_rows(self, month: str, owner: str | None = None) -> list[UsageRow]:
        """The month's sums per owner, type, model and day (of one owner, or of all)."""
        keys = (usage.c.owner, usage.c.assistant_type, usage.c.model, usage.c.day)
        query = sa.select(*keys, *(sa.func.sum(usage.c[k]) for k in KINDS)).where(usage.c.month == month)
        if owner is not None:
            query = query.where(usage.c.owner == owner)
        with self.db.connect() as conn:
            return [UsageRow(*row[:4], *(int(n or 0) for n in row[4:])) for row in conn.execute(query.group_by(*keys))]

    def run_of(self, upstream_id: str) -> tuple[str, str, str] | None:
        """(the client's run ID, owner, assistant type) of the recorded run behind an upstream run."""
        query = sa.select(runs.c.id, runs.c.owner, runs.c.assistant_type).where(
            sa.or_(runs.c.id == upstream_id, runs.c.upstream_id == upstream_id)
        )
        with self.db.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else tuple(row)


@functools.lru_cache(maxsize=16)
def _insert_sql(columns: tuple[str, ...]) -> str:
    """The insert-or-ignore of a usage row with these columns."""
    names = ", ".join(c for c in columns if c in usage.c)
    if len(names.split(", ")) != len(columns):
        raise ValueError(f"unknown usage columns: {columns}")
    marks = ", ".join(["?"] * len(columns))
    return f"INSERT INTO usage ({names}) VALUES ({marks}) ON CONFLICT (upstream_id) DO NOTHING"
