"""identity: requester verification as a state on erasure requests, and an owner on API keys

Revision ID: 0017_identity
Revises: 0016_hf_import
Create Date: 2026-12-07 07:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.db

revision = '0017_identity'
down_revision = '0016_hf_import'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('erasure_requests', sa.Column('verification_status', sa.String(length=10), server_default='unverified',
                                                nullable=False))
    op.add_column('erasure_requests', sa.Column('verification_method', sa.String(length=10), nullable=True))
    op.add_column('erasure_requests', sa.Column('verification_at', app.db.UTCDateTime(timezone=True), nullable=True))
    # `identity_verified: true` was the caller's word, method unknown: verified, method other, at receipt.
    op.execute(
        "UPDATE erasure_requests SET verification_status = 'verified', verification_method = 'other', "
        "verification_at = received_at WHERE identity_verified"
    )
    op.add_column('api_keys', sa.Column('owner', sa.String(length=100), nullable=True))


def downgrade() -> None:
    op.drop_column('api_keys', 'owner')
    op.drop_column('erasure_requests', 'verification_at')
    op.drop_column('erasure_requests', 'verification_method')
    op.drop_column('erasure_requests', 'verification_status')
