"""signing keys: every certificate signing key with its validity and revocation

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 04:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.db

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('signing_keys',
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('public_key', sa.String(length=64), nullable=False),
    sa.Column('valid_from', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('valid_until', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_from', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revocation_reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('key_id', name=op.f('pk_signing_keys'))
    )


def downgrade() -> None:
    op.drop_table('signing_keys')
