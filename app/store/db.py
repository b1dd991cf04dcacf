"""The backend's own database: tables, the SQLAlchemy engine, and migrations.

SQLite (WAL) by default; PostgreSQL where several instances share state.
The schema is changed through Alembic revisions in `migrations/`.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from app.store import guard

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
    # JSON of the thread's metadata as the upstream last answered it (the thread list shows it).
    sa.Column("metadata", sa.Text),
    sa.Index("ix_threads_owner_created_at", "owner", "created_at"),
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

# A run's steps (app/runs/steps.py), `seq` their order of creation.
run_steps = sa.Table(
    "run_steps",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(128), nullable=False, unique=True),
    sa.Column("run_id", sa.String(128), nullable=False, index=True),
    sa.Column("thread_id", sa.String(128), nullable=False, index=True),
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

# Files uploaded through the backend, each with its owner and the File object the upstream answered.
files = sa.Table(
    "files",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(128), nullable=False, unique=True),
    sa.Column("owner", sa.String(255), nullable=False, index=True),
    sa.Column("purpose", sa.String(32), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
)

# Vector stores made through the backend, each with its owner.
vector_stores = sa.Table(
    "vector_stores",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(128), nullable=False, unique=True),
    sa.Column("owner", sa.String(255), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

# The vector stores an administrator gave an assistant type, on top of its settings' ones.
assistant_vector_stores = sa.Table(
    "assistant_vector_stores",
    metadata,
    sa.Column("assistant_type", sa.String(64), primary_key=True),
    sa.Column("vector_store_id", sa.String(128), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("updated_by", sa.String(255), nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# The vector store a thread's attachments go to (responses engine), made when first needed.
thread_vector_stores = sa.Table(
    "thread_vector_stores",
    metadata,
    sa.Column("thread_id", sa.String(128), primary_key=True),
    sa.Column("vector_store_id", sa.String(128), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

# Thread vector stores whose upstream delete failed, tried again later (app/attachments.py).
vector_store_deletions = sa.Table(
    "vector_store_deletions",
    metadata,
    sa.Column("vector_store_id", sa.String(128), primary_key=True),
    sa.Column("thread_id", sa.String(128), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("next_try_at", sa.Float, nullable=False),
)

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
POSTGRES_CONNECT_TIMEOUT_SECONDS = 5


def _enable_sqlite_wal(dbapi_connection, _record):
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_database(url: str, serving: bool = False, pooled: bool = True) -> sa.Engine:
    """An SQLAlchemy engine for the URL; SQLite files get WAL and a busy timeout.

    A `serving` engine (the one requests use) never creates a SQLite file, never keeps a
    connection to a file that was deleted or replaced, and drops its connections after a
    storage error, so that it recovers by itself once the storage is back (app/store/guard.py).
    Not `pooled`: every connection is closed after use (for a background loop that must hold none).
    """
    sizes = {} if pooled else {"poolclass": sa.pool.NullPool}
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        sizes = sizes or dict(pool_size=20, max_overflow=200, pool_timeout=30)
        engine = sa.create_engine(url, **sizes)
        if serving and path and path != ":memory:":
            guard.watch_sqlite_file(engine, path)
        sa.event.listen(engine, "connect", _enable_sqlite_wal)
        return engine
    # pre_ping: a connection the server closed (a restart) is replaced at checkout, not used.
    sizes = sizes or dict(pool_size=10, max_overflow=50, pool_pre_ping=True)
    return sa.create_engine(url, connect_args=_postgres_connect_args(url), **sizes)


def _postgres_connect_args(url: str) -> dict:
    """A bounded connect: an unreachable server is an error within seconds, not a hang."""
    query = sa.engine.make_url(url).query
    return {} if "connect_timeout" in query else {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS}


def alembic_config(url: str | None = None, connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = url
    config.attributes["connection"] = connection
    return config


def upgrade(url: str, connection: sa.Connection | None = None) -> None:
    """Apply every Alembic migration to the database at `url`, through `connection` when given."""
    command.upgrade(alembic_config(url, connection), "head")
