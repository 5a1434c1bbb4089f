"""key lifecycle: expiry and rotation lineage of API keys

Revision ID: 0008
Revises: 0003
Create Date: 2026-12-01 06:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.db

revision = '0008'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', app.db.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('rotated_from', sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_api_keys_rotated_from_api_keys'), 'api_keys', ['rotated_from'], ['id'],
        )


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_api_keys_rotated_from_api_keys'), type_='foreignkey')
        batch_op.drop_column('rotated_from')
        batch_op.drop_column('expires_at')
