"""engineer -> PC requests

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 13:10:00.000000
"""

from alembic import op
import sqlalchemy as sa
import server.db


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pc_requests',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('agent_id', sa.String(length=36), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('ticket_id', sa.Integer(), nullable=True),
    sa.Column('source_agent_id', sa.String(length=36), nullable=True),
    sa.Column('requested_by_id', sa.Integer(), nullable=True),
    sa.Column('requested_by', sa.String(length=64), nullable=False),
    sa.Column('requested_by_name', sa.String(length=200), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('expires_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('unattended', sa.Boolean(), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('signature', sa.String(length=200), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('progress', sa.Float(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('delivered_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('updated_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['requested_by_id'], ['accounts.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['ticket_id'], ['tickets.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_pc_requests_agent_state', 'pc_requests', ['agent_id', 'state'], unique=False)
    op.create_index(op.f('ix_pc_requests_expires_at'), 'pc_requests', ['expires_at'], unique=False)
    op.create_index(op.f('ix_pc_requests_source_agent_id'), 'pc_requests', ['source_agent_id'], unique=False)
    op.create_index(op.f('ix_pc_requests_ticket_id'), 'pc_requests', ['ticket_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_pc_requests_ticket_id'), table_name='pc_requests')
    op.drop_index(op.f('ix_pc_requests_source_agent_id'), table_name='pc_requests')
    op.drop_index(op.f('ix_pc_requests_expires_at'), table_name='pc_requests')
    op.drop_index('ix_pc_requests_agent_state', table_name='pc_requests')
    op.drop_table('pc_requests')
