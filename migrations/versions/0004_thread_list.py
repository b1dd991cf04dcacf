"""The thread list: each thread's metadata, and an index to list a caller's threads newest first.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("threads") as batch:
        batch.add_column(sa.Column("metadata", sa.Text))
    op.create_index("ix_threads_owner_created_at", "threads", ["owner", "created_at"])


def downgrade():
    op.drop_index("ix_threads_owner_created_at", "threads")
    with op.batch_alter_table("threads") as batch:
        batch.drop_column("metadata")
