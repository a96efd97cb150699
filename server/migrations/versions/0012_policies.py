"""per-group policies; the policy and protocol versions agents report

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 16:20:00.000000
"""

from alembic import op
import sqlalchemy as sa
import server.db


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('group_policies',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('group', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('body', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', server.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('group', 'version', name='uq_group_policies_group_version')
    )
    with op.batch_alter_table('agents') as batch:
        batch.add_column(sa.Column('policy_version', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('protocol_version', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('agents') as batch:
        batch.drop_column('protocol_version')
        batch.drop_column('policy_version')
    op.drop_table('group_policies')
