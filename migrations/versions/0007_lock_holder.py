"""The thread lock's holder: the process that holds it (host, pid, start time) and its heartbeat.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("threads") as batch:
        batch.add_column(sa.Column("lock_host", sa.String(255)))
        batch.add_column(sa.Column("lock_pid", sa.Integer))
        batch.add_column(sa.Column("lock_started", sa.BigInteger))
        batch.add_column(sa.Column("lock_beat", sa.Float))


def downgrade():
    with op.batch_alter_table("threads") as batch:
        batch.drop_column("lock_beat")
        batch.drop_column("lock_started")
        batch.drop_column("lock_pid")
        batch.drop_column("lock_host")
