"""Thread vector stores (responses engine): the store a thread's attachments go to, and the
stores whose upstream delete failed, kept to be tried again.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "thread_vector_stores",
        sa.Column("thread_id", sa.String(128), primary_key=True),
        sa.Column("vector_store_id", sa.String(128), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "vector_store_deletions",
        sa.Column("vector_store_id", sa.String(128), primary_key=True),
        sa.Column("thread_id", sa.String(128), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("next_try_at", sa.Float, nullable=False),
    )


def downgrade():
    op.drop_table("vector_store_deletions")
    op.drop_table("thread_vector_stores")
