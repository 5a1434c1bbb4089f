"""slices: metadata columns and remediated slices of datasets, remediation requests and their
certificates

Revision ID: 0014_slices
Revises: 0013
Create Date: 2026-12-07 07:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.db

revision = '0014_slices'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('datasets') as batch:
        batch.add_column(sa.Column('metadata_columns', sa.JSON(), nullable=False, server_default='[]'))
        batch.add_column(sa.Column('group_columns', sa.JSON(), nullable=False, server_default='[]'))
        batch.add_column(sa.Column('source_column', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('slice_filters', sa.JSON(), nullable=False, server_default='[]'))
    # The default only fills the existing rows; new ones get theirs from the application.
    with op.batch_alter_table('datasets') as batch:
        for column in ('metadata_columns', 'group_columns', 'slice_filters'):
            batch.alter_column(column, existing_type=sa.JSON(), existing_nullable=False, server_default=None)
    op.create_table('remediation_requests',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('client', sa.String(length=100), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('dataset_id', sa.Uuid(), nullable=False),
    sa.Column('model_ids', sa.JSON(), nullable=False),
    sa.Column('selection', sa.JSON(), nullable=False),
    sa.Column('predicate', sa.Text(), nullable=True),
    sa.Column('trigger', sa.JSON(), nullable=True),
    sa.Column('group_column', sa.String(length=200), nullable=True),
    sa.Column('override_fraction', sa.Boolean(), nullable=False),
    sa.Column('dry_run', sa.JSON(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('job_id', sa.Uuid(), nullable=True),
    sa.Column('created_by', sa.String(length=200), nullable=False),
    sa.Column('approved_by', sa.String(length=200), nullable=True),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_remediation_requests_dataset_id_datasets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_remediation_requests'))
    )
    op.create_index(op.f('ix_remediation_requests_client'), 'remediation_requests', ['client'], unique=False)
    op.create_table('remediation_certificates',
    sa.Column('remediation_id', sa.Uuid(), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('signature', sa.Text(), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('public_key', sa.String(length=64), nullable=False),
    sa.Column('issued_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['remediation_id'], ['remediation_requests.id'], name=op.f('fk_remediation_certificates_remediation_id_remediation_requests')),
    sa.PrimaryKeyConstraint('remediation_id', name=op.f('pk_remediation_certificates'))
    )


def downgrade() -> None:
    op.drop_table('remediation_certificates')
    op.drop_index(op.f('ix_remediation_requests_client'), table_name='remediation_requests')
    op.drop_table('remediation_requests')
    with op.batch_alter_table('datasets') as batch:
        batch.drop_column('slice_filters')
        batch.drop_column('source_column')
        batch.drop_column('group_columns')
        batch.drop_column('metadata_columns')
