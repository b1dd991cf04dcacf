"""Knowledge: uploaded files and vector stores with their owners, and the vector stores
an administrator gave an assistant type.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "files",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(128), nullable=False, unique=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_files_owner", "files", ["owner"])
    op.create_table(
        "vector_stores",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(128), nullable=False, unique=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_vector_stores_owner", "vector_stores", ["owner"])
    op.create_table(
        "assistant_vector_stores",
        sa.Column("assistant_type", sa.String(64), primary_key=True),
        sa.Column("vector_store_id", sa.String(128), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("updated_by", sa.String(255), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade():
    op.drop_table("assistant_vector_stores")
    op.drop_index("ix_vector_stores_owner", "vector_stores")
    op.drop_table("vector_stores")
    op.drop_index("ix_files_owner", "files")
    op.drop_table("files")
