"""snapshot records: runs and sample restores PCs report, their protection, escrowed repository passwords

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 13:30:00.000000
"""

from alembic import op
import sqlalchemy as sa
import server.db


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('snapshot_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('agent_id', sa.String(length=36), nullable=False),
    sa.Column('repository', sa.String(length=20), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('snapshot_id', sa.String(length=64), nullable=True),
    sa.Column('started_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('finished_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('paths', sa.JSON(), nullable=False),
    sa.Column('files_new', sa.BigInteger(), nullable=False),
    sa.Column('files_changed', sa.BigInteger(), nullable=False),
    sa.Column('files_unmodified', sa.BigInteger(), nullable=False),
    sa.Column('total_files', sa.BigInteger(), nullable=False),
    sa.Column('bytes_added', sa.BigInteger(), nullable=False),
    sa.Column('total_bytes', sa.BigInteger(), nullable=False),
    sa.Column('warnings', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('received_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_snapshot_runs_agent_finished', 'snapshot_runs', ['agent_id', 'finished_at'], unique=False)
    op.create_table('restore_checks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('agent_id', sa.String(length=36), nullable=False),
    sa.Column('repository', sa.String(length=20), nullable=False),
    sa.Column('snapshot_id', sa.String(length=64), nullable=False),
    sa.Column('at', server.db.UTCDateTime(), nullable=False),
    sa.Column('files_checked', sa.BigInteger(), nullable=False),
    sa.Column('bytes_checked', sa.BigInteger(), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('received_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_restore_checks_agent_at', 'restore_checks', ['agent_id', 'at'], unique=False)
    op.create_table('protection',
    sa.Column('agent_id', sa.String(length=36), nullable=False),
    sa.Column('first_snapshot_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('last_snapshot_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('last_snapshot_id', sa.String(length=64), nullable=True),
    sa.Column('last_run_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('last_run_status', sa.String(length=20), nullable=True),
    sa.Column('last_failure_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_verified_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('last_check_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('last_check_ok', sa.Boolean(), nullable=True),
    sa.Column('last_check_detail', sa.Text(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('state_since', server.db.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('agent_id')
    )
    op.create_table('escrowed_passwords',
    sa.Column('agent_id', sa.String(length=36), nullable=False),
    sa.Column('key_id', sa.String(length=64), nullable=False),
    sa.Column('sealed_key', sa.LargeBinary(), nullable=False),
    sa.Column('sealed_password', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('agent_id')
    )


def downgrade() -> None:
    op.drop_table('escrowed_passwords')
    op.drop_table('protection')
    op.drop_index('ix_restore_checks_agent_at', table_name='restore_checks')
    op.drop_table('restore_checks')
    op.drop_index('ix_snapshot_runs_agent_finished', table_name='snapshot_runs')
    op.drop_table('snapshot_runs')
