"""job_checkpoints.model_*: a checkpoint of a succeeded job is a model (adapter or whole-model archive); its
resume archive (storage_key, bytes, sha256) becomes optional, since a finished job keeps only the model

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 20:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

RESUME_COLUMNS = (('storage_key', sa.String(length=255)), ('bytes', sa.BigInteger()), ('sha256', sa.String(length=64)))


def upgrade() -> None:
    with op.batch_alter_table('job_checkpoints', schema=None) as batch_op:
        for name, type_ in RESUME_COLUMNS:
            batch_op.alter_column(name, existing_type=type_, nullable=True)
        batch_op.add_column(sa.Column('model_kind', sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column('model_key', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('model_bytes', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('model_sha256', sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM job_checkpoints WHERE storage_key IS NULL")  # model-only rows have nothing to resume
    with op.batch_alter_table('job_checkpoints', schema=None) as batch_op:
        for column in ('model_sha256', 'model_bytes', 'model_key', 'model_kind'):
            batch_op.drop_column(column)
        for name, type_ in RESUME_COLUMNS:
            batch_op.alter_column(name, existing_type=type_, nullable=False)
