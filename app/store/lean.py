"""Short transactions on a pooled DBAPI connection, with plain SQL: the queries of a run's start and end.

Through an SQLAlchemy `Connection`, a one-statement transaction costs ~45 us of CPU;
on the pooled DBAPI connection itself ~22 us (docs/benchmarks.md). The pool is the
engine's own, so its checkout events still refuse a missing, read-only or replaced
SQLite file (app/store/guard.py). A DBAPI error is raised as SQLAlchemy's (an
`OperationalError` is a 503, as everywhere else); after a storage fault or a lost
server the engine's pool is replaced, as `guard` does for the other queries.

    with Lean(engine).transaction() as run:
        taken = run("UPDATE threads SET lock_run = ? WHERE id = ?", ("r1", "t1")).rowcount

Inside `with Lean(engine).together():` every such transaction on the same engine, in the same
thread or greenlet, is one transaction: a run's end, its steps and its usage row are written
with one commit.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import sqlalchemy as sa

from app.store.guard import storage_fault

# The transaction that `together` holds open in this thread or greenlet: (engine, its run function).
_joined: contextvars.ContextVar = contextvars.ContextVar("lean_together", default=None)


@functools.lru_cache(maxsize=256)
def _format_style(sql: str) -> str:
    """A `?` statement in the `%s` style of PostgreSQL's driver."""
    return sql.replace("?", "%s")


class Lean:
    """Transactions of plain SQL statements (written with `?`) on the engine's pooled connections."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.dialect = engine.dialect
        self._style = (lambda sql: sql) if engine.dialect.paramstyle == "qmark" else _format_style

    def transaction(self):
        """A function running one statement (one set of parameters, or a list of them) and
        returning its cursor; committed at the end of the block, rolled back on any error. Inside
        `together`, the one transaction already open."""
        joined = _joined.get()
        if joined is not None and joined[0] is self.engine:
            return _Joined(joined[1])
        return self._own_transaction()

    @contextlib.contextmanager
    def _own_transaction(self):
        try:
            raw = self.engine.raw_connection()  # the pool's checkout: guard's checks run here
        except self.dialect.loaded_dbapi.Error as exc:  # the server is down, restarting, or refusing
            raise self._wrapped(exc, lost=False) from exc
        cursor = None
        try:
            cursor = raw.cursor()

            def run(sql: str, params=()):
                statement = self._style(sql)
                if isinstance(params, list):
                    cursor.executemany(statement, params)
                else:
                    cursor.execute(statement, params)
                return cursor

            yield run
            raw.commit()
        except self.dialect.loaded_dbapi.Error as exc:
            lost = storage_fault(exc) or self.dialect.is_disconnect(exc, raw.dbapi_connection, cursor)
            self._roll_back(raw)
            if lost:
                raw.invalidate(exc)
                self.engine.dispose(close=False)  # every pooled connection is opened afresh
            raise self._wrapped(exc, lost) from exc
        except BaseException:
            self._roll_back(raw)
            raise
        finally:
            raw.close()  # back to the pool

    @contextlib.contextmanager
    def together(self):
        """One transaction for every `transaction()` on this engine inside the block (in this thread
        or greenlet), committed at its end. Nothing inside may wait on the network, and no other
        connection may write meanwhile: on SQLite it would wait for this one's lock."""
        with self.transaction() as run:
            token = _joined.set((self.engine, run))
            try:
                yield
            finally:
                _joined.reset(token)

    def _wrapped(self, exc: Exception, lost: bool) -> sa.exc.DBAPIError:
        """The DBAPI error as SQLAlchemy's (OperationalError, IntegrityError ...)."""
        return sa.exc.DBAPIError.instance(
            None, None, exc, self.dialect.loaded_dbapi.Error, connection_invalidated=lost, dialect=self.dialect
        )

    @staticmethod
    def _roll_back(raw) -> None:
        with contextlib.suppress(Exception):
            raw.rollback()


class _Joined:
    """A `transaction()` inside `together`: the open transaction's function; its end is the block's."""

    __slots__ = ("run",)

    def __init__(self, run):
        self.run = run

    def __enter__(self):
        return self.run

    def __exit__(self, *exc) -> None:
        return None
