"""relay routes: which server process splices a session

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02 16:10:00.000000
"""

from alembic import op
import sqlalchemy as sa
import server.db


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('relay_routes',
    sa.Column('session_id', sa.String(length=36), nullable=False),
    sa.Column('replica_url', sa.String(length=500), nullable=False),
    sa.Column('claimed_at', server.db.UTCDateTime(), nullable=False),
    sa.Column('expires_at', server.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('session_id')
    )


def downgrade() -> None:
    op.drop_table('relay_routes')
