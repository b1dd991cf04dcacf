"""Storage faults: connections that never outlive their SQLite file nor a storage error, and the write probe.

A SQLite connection is opened only while its file is there and writable, and with
`mode=rw`, which never creates it: SQLite would otherwise quietly open a file it
cannot write read-only (its WAL index too), keep that connection in the pool after
the file is writable again, and make an empty database where the file was deleted.
At every checkout the file is checked again: missing or not writable, the request
is refused (StorageUnavailable, a 503); replaced (another inode), the connection
is dropped and the new file opened. A storage error drops every pooled
connection, so that the next request opens the file afresh.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa

# Below this much free space on the database's disk, the database counts as full (not ready).
MIN_FREE_BYTES = 8 * 1024 * 1024
# SQLite errors after which a connection cannot be trusted to write again (not "database is locked").
_STORAGE_FAULTS = ("readonly", "disk i/o error", "unable to open database file", "disk is full")


class StorageUnavailable(Exception):
    """The database's storage cannot be written now (its SQLite file missing, read-only or on a full disk)."""


def _file_id(path: str) -> tuple[int, int] | None:
    """The device and inode that `path` names now; None when it names nothing."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def watch_sqlite_file(engine: sa.Engine, path: str) -> None:
    """Open `path` read-write only, and drop any connection whose file is gone, replaced or failing."""
    path = str(Path(path).resolve())
    uri = f"file:{quote(path)}?mode=rw"

    @sa.event.listens_for(engine, "do_connect")
    def open_read_write(_dialect, _record, cargs, cparams):
        problem = file_problem(path)
        if problem:  # SQLite would open a write-protected file read-only, and keep it so
            raise StorageUnavailable(problem)
        cargs[:] = [uri]
        cparams["uri"] = True

    @sa.event.listens_for(engine, "connect")
    def remember_file(_dbapi_connection, record):
        record.info["file_id"] = _file_id(path)

    @sa.event.listens_for(engine, "checkout")
    def same_file_still(_dbapi_connection, record, _proxy):
        # A connection opened earlier could still write (into the WAL) a file that is now read-only,
        # or one that was deleted: it is dropped, and the request refused until the file is back.
        found = _file_id(path)
        problem = file_problem(path, exists=found is not None)
        if problem:
            raise StorageUnavailable(problem)
        if found != record.info.get("file_id"):
            raise sa.exc.DisconnectionError("the SQLite file was replaced")  # the pool opens the new one

    @sa.event.listens_for(engine, "handle_error")
    def drop_after_storage_fault(context):
        if storage_fault(context.original_exception):
            context.is_disconnect = True  # invalidates the whole pool: every connection is reopened


def storage_fault(error: BaseException) -> bool:
    """Whether a SQLite error says its connection cannot be trusted to write again."""
    return isinstance(error, sqlite3.OperationalError) and any(f in str(error).lower() for f in _STORAGE_FAULTS)


def sqlite_path(engine: sa.Engine) -> str | None:
    """The engine's SQLite file, or None (PostgreSQL, or an in-memory database)."""
    if engine.dialect.name != "sqlite":
        return None
    path = engine.url.database
    return None if not path or path == ":memory:" else path


def file_problem(path: str, exists: bool | None = None) -> str | None:
    """Why the SQLite file at `path` cannot be written now, or None (`exists`: when the caller has just looked)."""
    # Never open the file here: closing any descriptor of it would drop this process's SQLite locks.
    if not (os.path.exists(path) if exists is None else exists):
        return "the database file is missing"
    if not os.access(path, os.W_OK):  # mode bits, a read-only mount, an immutable file (root too)
        return "the database file is not writable"
    if shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free < MIN_FREE_BYTES:
        return "the disk that holds the database is full"
    return None


def write_problem(engine: sa.Engine) -> str | None:
    """Why the database cannot take a write now, or None: the file checks (SQLite), then a
    one-row update in a transaction that is rolled back."""
    path = sqlite_path(engine)
    problem = file_problem(path) if path else None
    if problem:
        return problem
    try:
        with engine.connect() as conn, conn.begin() as transaction:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = version_num"))
            transaction.rollback()
    except sa.exc.SQLAlchemyError as exc:
        return f"the database does not take writes ({exc.__class__.__name__})"
    return None
