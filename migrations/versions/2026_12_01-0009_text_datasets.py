"""text datasets: the column of training text

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 09:50:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Set for a text dataset (its stored file holds a `text` column, no label or features);
    # null for a tabular one. Existing datasets are all tabular.
    with op.batch_alter_table('datasets') as batch:
        batch.add_column(sa.Column('text_column', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('datasets') as batch:
        batch.drop_column('text_column')
