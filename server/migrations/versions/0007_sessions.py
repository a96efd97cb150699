"""remote sessions: offers, grants, events, chat and one-time relay tokens

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 13:20:00.000000
"""

from alembic import op
import sqlalchemy as sa
import server.db


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('remote_sessions',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=False),
    sa.Column('agent_id', sa.String(length=36), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('username', sa.String(length=200), nullable=False),
    sa.Column('platform', sa.String(length=100), nullable=False),
    sa.Column('host_key', sa.Text(), nullable=False),
    sa.Column('host_key_fingerprint', sa.String(length=100), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('last_seen_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('offer_expires_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('event_seq', sa.Integer(), nullable=False),
    sa.Column('grant_id', sa.String(length=64), nullable=True),
    sa.Column('grant_payload', sa.JSON(), nullable=True),
    sa.Column('grant_signature', sa.String(length=200), nullable=True),
    sa.Column('engineer_id', sa.Integer(), nullable=True),
    sa.Column('engineer_username', sa.String(length=64), nullable=True),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('grant_expires_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('max_duration_seconds', sa.Integer(), nullable=True),
    sa.Column('answered_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('started_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('ended_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('end_reason', sa.String(length=200), nullable=True),
    sa.Column('bytes_to_pc', sa.BigInteger(), nullable=False),
    sa.Column('bytes_from_pc', sa.BigInteger(), nullable=False),
    sa.Column('recording_key', sa.String(length=512), nullable=True),
    sa.Column('recording_size', sa.BigInteger(), nullable=True),
    sa.Column('recording_sha256', sa.String(length=64), nullable=True),
    sa.Column('recording_at', server.db.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['engineer_id'], ['accounts.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('grant_id')
    )
    op.create_index('ix_remote_sessions_agent_state', 'remote_sessions', ['agent_id', 'state'], unique=False)
    op.create_index(op.f('ix_remote_sessions_state'), 'remote_sessions', ['state'], unique=False)
    op.create_index(op.f('ix_remote_sessions_ticket_id'), 'remote_sessions', ['ticket_id'], unique=False)
    op.create_table('session_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.String(length=36), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('at', server.db.UTCDateTime(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['remote_sessions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('session_id', 'seq')
    )
    op.create_table('session_chat',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('session_id', sa.String(length=36), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('at', server.db.UTCDateTime(), nullable=False),
    sa.Column('sender', sa.String(length=20), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['session_id'], ['remote_sessions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('session_id', 'seq')
    )
    op.create_table('relay_tokens',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('session_id', sa.String(length=36), nullable=False),
    sa.Column('side', sa.String(length=20), nullable=False),
    sa.Column('principal', sa.String(length=100), nullable=False),
    sa.Column('grant_id', sa.String(length=64), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('expires_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('used_at', server.db.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['session_id'], ['remote_sessions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_hash')
    )
    op.create_index(op.f('ix_relay_tokens_session_id'), 'relay_tokens', ['session_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_relay_tokens_session_id'), table_name='relay_tokens')
    op.drop_table('relay_tokens')
    op.drop_table('session_chat')
    op.drop_table('session_events')
    op.drop_index(op.f('ix_remote_sessions_ticket_id'), table_name='remote_sessions')
    op.drop_index(op.f('ix_remote_sessions_state'), table_name='remote_sessions')
    op.drop_index('ix_remote_sessions_agent_state', table_name='remote_sessions')
    op.drop_table('remote_sessions')
