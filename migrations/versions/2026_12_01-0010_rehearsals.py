"""model rehearsals: each approximate method's settings tried against a real retrain

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 11:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.db

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('model_rehearsals',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('model_id', sa.Uuid(), nullable=False),
    sa.Column('model_version', sa.Integer(), nullable=False),
    sa.Column('dataset_version_id', sa.Uuid(), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('subjects', sa.Integer(), nullable=False),
    sa.Column('forget_records', sa.Integer(), nullable=False),
    sa.Column('retrain_cpu_s', sa.Float(), nullable=False),
    sa.Column('results', sa.JSON(), nullable=False),
    sa.Column('chosen', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['dataset_version_id'], ['dataset_versions.id'], name=op.f('fk_model_rehearsals_dataset_version_id_dataset_versions')),
    sa.ForeignKeyConstraint(['model_id'], ['models.id'], name=op.f('fk_model_rehearsals_model_id_models')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_rehearsals'))
    )
    with op.batch_alter_table('model_rehearsals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_rehearsals_dataset_version_id'), ['dataset_version_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_rehearsals_model_id'), ['model_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('model_rehearsals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_rehearsals_model_id'))
        batch_op.drop_index(batch_op.f('ix_model_rehearsals_dataset_version_id'))
    op.drop_table('model_rehearsals')
