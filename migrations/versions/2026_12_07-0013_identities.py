"""identities: identity links, the identifier kinds each client holds, and what each request's
planning searched

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 05:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.db

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('identity_links',
    sa.Column('client', sa.String(length=100), nullable=False),
    sa.Column('key_a', sa.String(length=64), nullable=False),
    sa.Column('key_b', sa.String(length=64), nullable=False),
    sa.Column('kind_a', sa.String(length=64), nullable=False),
    sa.Column('kind_b', sa.String(length=64), nullable=False),
    sa.Column('origin', sa.String(length=16), nullable=False),
    sa.Column('dataset_id', sa.Uuid(), nullable=True),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('client', 'key_a', 'key_b', name=op.f('pk_identity_links'))
    )
    op.create_index('ix_identity_links_client_key_b', 'identity_links', ['client', 'key_b'], unique=False)
    op.create_table('held_identifier_kinds',
    sa.Column('client', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('client', 'kind', name=op.f('pk_held_identifier_kinds'))
    )
    op.create_table('request_searches',
    sa.Column('request_id', sa.Uuid(), nullable=False),
    sa.Column('kinds', sa.JSON(), nullable=False),
    sa.Column('pairs', sa.JSON(), nullable=False),
    sa.Column('checked', sa.JSON(), nullable=False),
    sa.Column('searched_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('request_id', name=op.f('pk_request_searches'))
    )
    # The subject kinds of datasets uploaded before: held, so requests by them stay known.
    op.execute(
        "INSERT INTO held_identifier_kinds (client, kind, created_at) "
        "SELECT client, subject_kind, MIN(created_at) FROM datasets GROUP BY client, subject_kind"
    )


def downgrade() -> None:
    op.drop_table('request_searches')
    op.drop_table('held_identifier_kinds')
    op.drop_index('ix_identity_links_client_key_b', table_name='identity_links')
    op.drop_table('identity_links')
