"""dashboard sessions, login failures, audit verifications

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 06:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.db

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table('dashboard_sessions',
    sa.Column('id_hash', sa.String(length=64), nullable=False),
    sa.Column('key_id', sa.Uuid(), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id_hash', name=op.f('pk_dashboard_sessions'))
    )
    with op.batch_alter_table('dashboard_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dashboard_sessions_key_id'), ['key_id'], unique=False)

    op.create_table('dashboard_login_failures',
    sa.Column('id', BigId, autoincrement=True, nullable=False),
    sa.Column('address', sa.String(length=64), nullable=False),
    sa.Column('at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dashboard_login_failures'))
    )
    with op.batch_alter_table('dashboard_login_failures', schema=None) as batch_op:
        batch_op.create_index('ix_dashboard_login_failures_address_at', ['address', 'at'], unique=False)

    op.create_table('dashboard_audit_verifications',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('started_by', sa.String(length=200), nullable=False),
    sa.Column('chains_total', sa.Integer(), nullable=False),
    sa.Column('chains_done', sa.Integer(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('started_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dashboard_audit_verifications'))
    )
    with op.batch_alter_table('dashboard_audit_verifications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dashboard_audit_verifications_started_at'), ['started_at'], unique=False)


def downgrade() -> None:
    op.drop_table('dashboard_audit_verifications')
    op.drop_table('dashboard_login_failures')
    op.drop_table('dashboard_sessions')
