"""The backend's own database: tables, the SQLAlchemy engine, and migrations.

SQLite (WAL) by default; PostgreSQL where several instances share state.
The schema is changed through Alembic revisions in `migrations/`.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

metadata = sa.MetaData()

threads = sa.Table(
    "threads",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("engine", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    # The active-run lock: held by one run until it ends or `lock_until` passes,
    # so a crashed process cannot block a thread for longer than one deadline.
    sa.Column("lock_run", sa.String(128)),
    sa.Column("lock_until", sa.Float),
    # The process holding the lock (app/runs/recovery.py), NULL when the record holds it (a run
    # waiting for the client's tool outputs); its heartbeat, so that another process can tell it died.
    sa.Column("lock_host", sa.String(255)),
    sa.Column("lock_pid", sa.Integer),
    sa.Column("lock_started", sa.BigInteger),
    sa.Column("lock_beat", sa.Float),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("thread_id", sa.String(128), nullable=False, index=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("assistant_type", sa.String(64), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("snapshot", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    # The upstream run now behind it, when a tool round started another one (responses engine).
    sa.Column("upstream_id", sa.String(128)),
    # JSON of what a run stopped for the client's tool outputs needs to go on; NULL otherwise.
    sa.Column("pending", sa.Text),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(128), nullable=False, unique=True),
    sa.Column("thread_id", sa.String(128), nullable=False, index=True),
    sa.Column("run_id", sa.String(128), index=True),
    sa.Column("body", sa.Text, nullable=False),
)

idempotency = sa.Table(
    "idempotency",
    metadata,
    sa.Column("owner", sa.String(255), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(400), nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("body", sa.Text),
    sa.Column("headers", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),
)

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def _enable_sqlite_wal(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_database(url: str, pooled: bool = True) -> sa.Engine:
    """An SQLAlchemy engine for the URL; SQLite files get WAL and a busy timeout. Not `pooled`:
    every connection is closed after use (for a background loop that must hold none)."""
    sizes = {} if pooled else {"poolclass": sa.pool.NullPool}
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        sizes = sizes or dict(pool_size=20, max_overflow=200, pool_timeout=30)
        engine = sa.create_engine(url, **sizes)
        sa.event.listen(engine, "connect", _enable_sqlite_wal)
        return engine
    sizes = sizes or dict(pool_size=10, max_overflow=50, pool_pre_ping=True)
    return sa.create_engine(url, **sizes)


def alembic_config(url: str | None = None, connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = url
    config.attributes["connection"] = connection
    return config


def upgrade(url: str, connection: sa.Connection | None = None) -> None:
    """Apply every Alembic migration to the database at `url`, through `connection` when given."""
    command.upgrade(alembic_config(url, connection), "head")
