"""model bases: imported Hugging Face base models that hf_causal_lm models fine-tune

Revision ID: 0016_hf_import
Revises: 0015_images_data
Create Date: 2026-12-07 07:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.db

revision = '0016_hf_import'
down_revision = '0015_images_data'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('model_bases',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('client', sa.String(length=100), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('architecture', sa.String(length=32), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('parameters', sa.BigInteger(), nullable=False),
    sa.Column('archive_sha256', sa.String(length=64), nullable=False),
    sa.Column('files', sa.JSON(), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_bases')),
    sa.UniqueConstraint('client', 'name', name=op.f('uq_model_bases_client_name'))
    )
    op.create_index(op.f('ix_model_bases_archive_sha256'), 'model_bases', ['archive_sha256'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_model_bases_archive_sha256'), table_name='model_bases')
    op.drop_table('model_bases')
