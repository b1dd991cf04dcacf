"""Alembic environment: the connection or URL comes from the caller, or the URL from DATABASE_URL."""

import os

from alembic import context

from app.store.db import make_database, metadata

url = context.config.attributes.get("database_url") or os.environ.get("DATABASE_URL", "sqlite:///instance/backend.db")
connection = context.config.attributes.get("connection")


def run(connection):
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:
    engine = make_database(url)
    with engine.connect() as connection:
        run(connection)
    engine.dispose()
