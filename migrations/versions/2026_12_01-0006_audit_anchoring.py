"""audit anchoring: log positions, signed checkpoints, guarded chain heads

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 06:20:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import app.db

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

# Events stay append-only, with one exception: the checkpointer sets an event's log_index once,
# after commit, and nothing else of the row may change. Chain heads only move forward by one
# link. Checkpoints are append-only. A superuser or the tables' owner can still drop triggers:
# that is what the signed checkpoints kept outside the database reveal.
PG_UPGRADE = """
CREATE FUNCTION obliviate_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only (% refused)', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE FUNCTION obliviate_audit_sequence_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.log_index IS NULL AND NEW.log_index IS NOT NULL
     AND to_jsonb(NEW) - 'log_index' = to_jsonb(OLD) - 'log_index' THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'audit_events is append-only (only an unset log_index may be set)' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE FUNCTION obliviate_audit_head_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.stream = OLD.stream AND NEW.seq = OLD.seq + 1 THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'audit_heads only move forward by one link (% refused)', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;
DROP TRIGGER audit_events_no_update ON audit_events;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION obliviate_audit_sequence_only();
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION obliviate_append_only();
CREATE TRIGGER audit_heads_forward_only BEFORE UPDATE OR DELETE ON audit_heads
  FOR EACH ROW EXECUTE FUNCTION obliviate_audit_head_forward();
CREATE TRIGGER audit_heads_no_truncate BEFORE TRUNCATE ON audit_heads
  FOR EACH STATEMENT EXECUTE FUNCTION obliviate_append_only();
CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE OR DELETE ON audit_checkpoints
  FOR EACH ROW EXECUTE FUNCTION obliviate_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
  FOR EACH STATEMENT EXECUTE FUNCTION obliviate_append_only();
"""
PG_DOWNGRADE = """
DROP TRIGGER audit_checkpoints_no_truncate ON audit_checkpoints;
DROP TRIGGER audit_checkpoints_no_update ON audit_checkpoints;
DROP TRIGGER audit_heads_no_truncate ON audit_heads;
DROP TRIGGER audit_heads_forward_only ON audit_heads;
DROP TRIGGER audit_events_no_delete ON audit_events;
DROP TRIGGER audit_events_no_update ON audit_events;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION obliviate_audit_append_only();
DROP FUNCTION obliviate_audit_head_forward();
DROP FUNCTION obliviate_audit_sequence_only();
DROP FUNCTION obliviate_append_only();
"""
_UNCHANGED = " AND ".join(
    f"NEW.{column} IS OLD.{column}" for column in ("id", "stream", "seq", "type", "at", "actor", "data", "prev_hash", "hash")
)
SQLITE_GUARD = [
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
    f"WHEN NOT (OLD.log_index IS NULL AND NEW.log_index IS NOT NULL AND {_UNCHANGED}) "
    "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only (only an unset log_index may be set)'); END",
    "CREATE TRIGGER audit_heads_forward_only BEFORE UPDATE ON audit_heads "
    "WHEN NOT (NEW.stream IS OLD.stream AND NEW.seq = OLD.seq + 1) "
    "BEGIN SELECT RAISE(ABORT, 'audit_heads only move forward by one link'); END",
    "CREATE TRIGGER audit_heads_no_delete BEFORE DELETE ON audit_heads "
    "BEGIN SELECT RAISE(ABORT, 'audit_heads only move forward by one link'); END",
    "CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints "
    "BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END",
    "CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints "
    "BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only'); END",
]
SQLITE_DOWNGRADE = [
    "DROP TRIGGER audit_checkpoints_no_delete",
    "DROP TRIGGER audit_checkpoints_no_update",
    "DROP TRIGGER audit_heads_no_delete",
    "DROP TRIGGER audit_heads_forward_only",
    "DROP TRIGGER audit_events_no_update",
    "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events "
    "BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END",
]


def upgrade() -> None:
    # Plain ALTER TABLE ADD COLUMN (no batch copy), which keeps the table's triggers.
    op.add_column('audit_events', sa.Column('log_index', sa.BigInteger(), nullable=True))
    op.create_index('ix_audit_events_log_index', 'audit_events', ['log_index'], unique=True)
    op.create_index('ix_audit_events_unsequenced', 'audit_events', ['id'], unique=False,
                    postgresql_where=sa.text('log_index IS NULL'), sqlite_where=sa.text('log_index IS NULL'))
    op.create_table('audit_checkpoints',
    sa.Column('tree_size', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('root_hash', sa.String(length=64), nullable=False),
    sa.Column('frontier', sa.JSON(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('tree_size', name=op.f('pk_audit_checkpoints'))
    )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(PG_UPGRADE)
    elif dialect == "sqlite":
        op.execute("DROP TRIGGER audit_events_no_update")
        for statement in SQLITE_GUARD:
            op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(PG_DOWNGRADE)
    elif dialect == "sqlite":
        for statement in SQLITE_DOWNGRADE:
            op.execute(statement)
    op.drop_table('audit_checkpoints')
    op.drop_index('ix_audit_events_unsequenced', table_name='audit_events')
    op.drop_index('ix_audit_events_log_index', table_name='audit_events')
    if dialect == "sqlite":
        # SQLite drops a column in place (3.35+); a batch copy would lose the table's triggers.
        op.execute("ALTER TABLE audit_events DROP COLUMN log_index")
    else:
        op.drop_column('audit_events', 'log_index')
