"""The database schema at start: checked against the newest Alembic revision and, unless
DATABASE_AUTO_MIGRATE is off, brought up to it under a lock, so that several workers or
instances starting at once on one new database do not race."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import logging
import weakref
import zlib

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from app.environment import ConfigError
from app.store.db import alembic_config, make_database, upgrade

log = logging.getLogger("app.schema")

MIGRATE_COMMAND = "python -m app.store.migrate"
# pg_advisory_lock's key: any constant that other applications on the database are unlikely to use.
LOCK_KEY = zlib.crc32(b"assistants-backend schema upgrade")
_current = weakref.WeakSet()  # engines whose database was seen at head: the schema only moves forward


@functools.cache
def head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def revision(conn: sa.Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def is_current(engine: sa.Engine) -> bool:
    """Whether the database is at the newest revision; asked until it is, then remembered."""
    if engine in _current:
        return True
    with engine.connect() as conn:
        if revision(conn) != head():
            return False
    _current.add(engine)
    return True


def _engine(url: str) -> sa.Engine:
    try:
        return make_database(url)
    except sa.exc.NoSuchModuleError:
        scheme = url.split(":", 1)[0]
        raise ConfigError(f"DATABASE_URL: unknown database {scheme!r} (sqlite or postgresql+psycopg)") from None
    except sa.exc.ArgumentError:
        raise ConfigError("DATABASE_URL: not a database URL (e.g. sqlite:///instance/backend.db)") from None
    except ImportError as exc:
        raise ConfigError(f"DATABASE_URL: its driver is not installed ({exc})") from None


@contextlib.contextmanager
def _upgrade_lock(conn: sa.Connection, url: str):
    """Held by one upgrader at a time: an advisory lock on PostgreSQL, a file lock next to a SQLite file."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
        conn.commit()
        try:
            yield
        finally:
            conn.rollback()
            conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
            conn.commit()
        return
    path = sa.engine.make_url(url).database if conn.dialect.name == "sqlite" else None
    if not path or path == ":memory:":
        yield
        return
    with open(f"{path}.migrate-lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def prepare(url: str, auto_migrate: bool = True) -> None:
    """Check that DATABASE_URL answers, and apply the missing migrations unless `auto_migrate` is off.

    Raises ConfigError, one line naming DATABASE_URL, when the database cannot be used."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            current = revision(conn)
            conn.commit()
            if current == head():
                return
            if not auto_migrate:
                log.warning(
                    "database schema at %s, not %s: run `%s`; /readyz answers 503 until then",
                    current,
                    head(),
                    MIGRATE_COMMAND,
                )
                return
            with _upgrade_lock(conn, url):
                if revision(conn) != head():  # another process may have done it while we waited
                    conn.commit()
                    log.info("upgrading the database schema from %s to %s", current, head())
                    upgrade(url, connection=conn)
                conn.commit()
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else exc.orig.__class__.__name__
        raise ConfigError(f"DATABASE_URL: the database does not answer: {reason}") from None
    except CommandError as exc:
        raise ConfigError(f"DATABASE_URL: cannot bring the schema to {head()}: {exc}") from None
    finally:
        engine.dispose()
