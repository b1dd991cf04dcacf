"""Run steps: one row per step of a run (tool calls, message creation), in the order they were made.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "run_steps",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(128), nullable=False, unique=True),
        sa.Column("run_id", sa.String(128), nullable=False, index=True),
        sa.Column("thread_id", sa.String(128), nullable=False, index=True),
        sa.Column("body", sa.Text, nullable=False),
    )


def downgrade():
    op.drop_table("run_steps")
