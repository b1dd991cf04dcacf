"""Runs that take several upstream runs (tool rounds) and runs waiting for the client's tool outputs.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("upstream_id", sa.String(128)))
        batch.add_column(sa.Column("pending", sa.Text))


def downgrade():
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("pending")
        batch.drop_column("upstream_id")
