"""model references for the per-record membership audit

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 10:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.db

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('model_references',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('model_id', sa.Uuid(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('pool_size', sa.Integer(), nullable=False),
    sa.Column('membership_seed', sa.Integer(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('dataset_version_id', sa.Uuid(), nullable=False),
    sa.Column('weights_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('destroyed_at', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['dataset_version_id'], ['dataset_versions.id'], name=op.f('fk_model_references_dataset_version_id_dataset_versions')),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_model_references_model_id_models')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_references')),
    sa.UniqueConstraint('model_id', 'position', 'generation', name=op.f('uq_model_references_model_id_position_generation'))
    )
    with op.batch_alter_table('model_references', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_references_dataset_version_id'), ['dataset_version_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_references_model_id'), ['model_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('model_references', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_references_model_id'))
        batch_op.drop_index(batch_op.f('ix_model_references_dataset_version_id'))
    op.drop_table('model_references')
