"""The calibrator and the review threshold a version's evaluation chose.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("versions", "metrics"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("calibrator_json", sa.Text, nullable=False, server_default="")
            )
            batch.add_column(sa.Column("threshold", sa.Float, nullable=True))


def downgrade() -> None:
    for table in ("versions", "metrics"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("threshold")
            batch.drop_column("calibrator_json")
