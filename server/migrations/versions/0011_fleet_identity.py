"""fleet identity: enrollment-token networks and last user, quarantine, retirement, re-imaged PC replacement

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 16:10:00.000000
"""

from alembic import op
import sqlalchemy as sa
import server.db


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('enrolled_by_token_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('quarantined_at', server.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('quarantine_reason', sa.String(length=500), server_default='', nullable=False))
        batch_op.add_column(sa.Column('retired_at', server.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('replaced_by_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('replaces_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('instance_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('instance_seen_at', server.db.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('previous_instance_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('previous_instance_seen_at', server.db.UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_agents_enrolled_by_token_id'), ['enrolled_by_token_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_agents_replaces_id'), ['replaces_id'], unique=False)
    with op.batch_alter_table('enrollment_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('networks', sa.JSON(), server_default='[]', nullable=False))
        batch_op.add_column(sa.Column('last_used_by_agent_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('last_used_by_hostname', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('enrollment_tokens', schema=None) as batch_op:
        batch_op.drop_column('last_used_by_hostname')
        batch_op.drop_column('last_used_by_agent_id')
        batch_op.drop_column('networks')
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_agents_replaces_id'))
        batch_op.drop_index(batch_op.f('ix_agents_enrolled_by_token_id'))
        for column in ('previous_instance_seen_at', 'previous_instance_id', 'instance_seen_at', 'instance_id',
                       'replaces_id', 'replaced_by_id', 'retired_at', 'quarantine_reason', 'quarantined_at',
                       'enrolled_by_token_id'):
            batch_op.drop_column(column)
