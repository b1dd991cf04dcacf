"""Usage: one row per upstream run or response that ended, keyed by its upstream ID.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "usage",
        sa.Column("upstream_id", sa.String(128), primary_key=True),
        sa.Column("run_id", sa.String(128)),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("assistant_type", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger, nullable=False),
        sa.Column("total_tokens", sa.BigInteger, nullable=False),
        sa.Column("recorded_at", sa.Float, nullable=False),
    )
    op.create_index("usage_owner_month", "usage", ["owner", "month"])
    op.create_index("usage_month", "usage", ["month"])


def downgrade():
    op.drop_index("usage_month", table_name="usage")
    op.drop_index("usage_owner_month", table_name="usage")
    op.drop_table("usage")
