"""server-side restic repositories: objects, usage and prune fence, short-lived credentials

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 13:10:00.000000
"""

from alembic import op
import sqlalchemy as sa
import server.db


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('restic_repositories',
    sa.Column('agent_id', sa.String(length=36), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('fenced_at', server.db.UTCDateTime(), nullable=True),
    sa.Column('pruned_at', server.db.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('agent_id')
    )
    op.create_table('restic_objects',
    sa.Column('agent_id', sa.String(length=36), nullable=False),
    sa.Column('type', sa.String(length=10), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=10), nullable=False),
    sa.Column('trashed_at', server.db.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('agent_id', 'type', 'name')
    )
    op.create_index(op.f('ix_restic_objects_trashed_at'), 'restic_objects', ['trashed_at'], unique=False)
    op.create_table('restic_credentials',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=40), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('repository_id', sa.String(length=36), nullable=False),
    sa.Column('issued_to', sa.String(length=36), nullable=True),
    sa.Column('mode', sa.String(length=10), nullable=False),
    sa.Column('purpose', sa.String(length=20), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('expires_at', server.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['issued_to'], ['agents.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['repository_id'], ['agents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('username')
    )
    op.create_index(op.f('ix_restic_credentials_expires_at'), 'restic_credentials', ['expires_at'], unique=False)
    op.create_index(op.f('ix_restic_credentials_repository_id'), 'restic_credentials', ['repository_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_restic_credentials_repository_id'), table_name='restic_credentials')
    op.drop_index(op.f('ix_restic_credentials_expires_at'), table_name='restic_credentials')
    op.drop_table('restic_credentials')
    op.drop_index(op.f('ix_restic_objects_trashed_at'), table_name='restic_objects')
    op.drop_table('restic_objects')
    op.drop_table('restic_repositories')
