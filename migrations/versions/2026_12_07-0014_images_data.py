"""images_data: image datasets (their image column and image size) and the sample grid of an
image model's version

Revision ID: 0014_images_data
Revises: 0013
Create Date: 2026-12-07 07:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0014_images_data'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('datasets') as batch:
        batch.add_column(sa.Column('image_column', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('image_size', sa.JSON(), nullable=True))
    with op.batch_alter_table('model_versions') as batch:
        batch.add_column(sa.Column('sample_grid_sha256', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('model_versions') as batch:
        batch.drop_column('sample_grid_sha256')
    with op.batch_alter_table('datasets') as batch:
        batch.drop_column('image_size')
        batch.drop_column('image_column')
