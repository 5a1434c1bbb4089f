"""dataset grants (cross-client use of a dataset) and the jobs' count of lost leases

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 04:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.db

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dataset_grants',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('dataset_id', sa.Uuid(), nullable=False),
    sa.Column('grantee_client', sa.String(length=100), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('revoked_at', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_dataset_grants_dataset_id_datasets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dataset_grants'))
    )
    with op.batch_alter_table('dataset_grants', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dataset_grants_dataset_id'), ['dataset_id'], unique=False)
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lost_leases', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('lost_leases')
    with op.batch_alter_table('dataset_grants', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dataset_grants_dataset_id'))
    op.drop_table('dataset_grants')
