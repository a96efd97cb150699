"""agent request nonces

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 08:40:00.000000
"""

from alembic import op
import sqlalchemy as sa
import server.db


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agent_nonces',
    sa.Column('agent_id', sa.String(length=36), nullable=False),
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('expires_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('agent_id', 'nonce')
    )
    op.create_index(op.f('ix_agent_nonces_expires_at'), 'agent_nonces', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_agent_nonces_expires_at'), table_name='agent_nonces')
    op.drop_table('agent_nonces')
