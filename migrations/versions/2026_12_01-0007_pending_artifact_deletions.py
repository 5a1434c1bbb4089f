"""pending artifact deletions

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 06:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.db

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pending_artifact_deletions',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sha256', name=op.f('pk_pending_artifact_deletions'))
    )


def downgrade() -> None:
    op.drop_table('pending_artifact_deletions')
