"""relay: settlement-mode answers (held until a fallback time) and relayed settle/claim jobs

Answers of a batch whose manifest declares settlement mode are stored "held" with hold_until;
the submitter moves them to "settled" when a settlement pays them, or to "accepted" (the direct
path) at hold_until. relay_jobs queues settle and claimMany calls for the submitter, whose
transactions are recorded in relay_transactions with job_id like its submitAnswers packs.

Revision ID: e4a7c2d9b315
Revises: c3f81a9e4d27
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "e4a7c2d9b315"
down_revision = "c3f81a9e4d27"
branch_labels = None
depends_on = None

QUEUE_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column("relay_answers", sa.Column("hold_until", sa.BigInteger(), nullable=True))
    op.add_column("relay_transactions", sa.Column("job_id", sa.BigInteger(), nullable=True))
    op.create_table(
        "relay_jobs",
        sa.Column("id", QUEUE_ID, primary_key=True, autoincrement=True),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=True),
        sa.Column("requested_by", sa.String(42), nullable=True),
        sa.Column("calldata", sa.LargeBinary(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.String(300), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_relay_jobs_status_id", "relay_jobs", ["status", "id"])


def downgrade() -> None:
    op.drop_index("ix_relay_jobs_status_id", table_name="relay_jobs")
    op.drop_table("relay_jobs")
    with op.batch_alter_table("relay_transactions") as batch:
        batch.drop_column("job_id")
    with op.batch_alter_table("relay_answers") as batch:
        batch.drop_column("hold_until")
