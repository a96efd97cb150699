"""agent status: pending enrollments awaiting an admin, refused and revoked agents

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 08:40:00.000000
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('status', sa.String(length=20), server_default='active', nullable=False))
        batch_op.add_column(sa.Column('resembles_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('evidence', sa.String(length=200), server_default='', nullable=False))
    # Agents revoked before statuses existed are revoked ones.
    op.execute("UPDATE agents SET status = 'revoked' WHERE revoked_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_column('evidence')
        batch_op.drop_column('resembles_id')
        batch_op.drop_column('status')
