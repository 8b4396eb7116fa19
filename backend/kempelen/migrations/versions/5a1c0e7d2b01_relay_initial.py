"""relay: initial tables (answer queue, transactions, leases, SIWE nonces, sessions, uploads)

Revision ID: 5a1c0e7d2b01
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "5a1c0e7d2b01"
down_revision = None
branch_labels = ("relay",)
depends_on = None

QUEUE_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIMESTAMP = sa.DateTime(timezone=True)
UINT256 = sa.Numeric(78, 0)


def upgrade() -> None:
    op.create_table(
        "relay_answers",
        sa.Column("id", QUEUE_ID, primary_key=True, autoincrement=True),
        sa.Column("receipt_id", sa.String(66), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("task_index", sa.BigInteger(), nullable=False),
        sa.Column("worker", sa.String(42), nullable=False),
        sa.Column("answer_digest", sa.LargeBinary(32), nullable=False),
        sa.Column("signature", sa.LargeBinary(65), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("payload_cid", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("skip_reason", sa.String(32), nullable=True),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("accepted_at", TIMESTAMP, nullable=False),
        sa.Column("submitted_at", TIMESTAMP, nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("receipt_id", name="uq_relay_answers_receipt_id"),
        sa.UniqueConstraint("chain_id", "batch_id", "worker", "task_index", name="uq_relay_answers_key"),
    )
    op.create_index("ix_relay_answers_status_id", "relay_answers", ["status", "id"])
    op.create_index("ix_relay_answers_worker", "relay_answers", ["worker"])
    op.create_table(
        "relay_transactions",
        sa.Column("tx_hash", sa.String(66), primary_key=True),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("gas_price", UINT256, nullable=True),
        sa.Column("max_fee_per_gas", UINT256, nullable=True),
        sa.Column("max_priority_fee_per_gas", UINT256, nullable=True),
        sa.Column("answer_ids", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("sent_at", TIMESTAMP, nullable=False),
        sa.Column("mined_block", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_relay_transactions_nonce", "relay_transactions", ["nonce"])
    op.create_table(
        "relay_leases",
        sa.Column("id", QUEUE_ID, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("task_index", sa.BigInteger(), nullable=False),
        sa.Column("worker", sa.String(42), nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.UniqueConstraint("batch_id", "task_index", "worker", name="uq_relay_leases_slot"),
    )
    op.create_index("ix_relay_leases_worker", "relay_leases", ["worker"])
    op.create_table(
        "relay_nonces",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.Column("issued_at", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "relay_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("address", sa.String(42), nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_relay_sessions_address", "relay_sessions", ["address"])
    op.create_table(
        "relay_uploads",
        sa.Column("id", QUEUE_ID, primary_key=True, autoincrement=True),
        sa.Column("cid", sa.String(100), nullable=False),
        sa.Column("uploader", sa.String(42), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.UniqueConstraint("cid", "uploader", name="uq_relay_uploads_cid_uploader"),
    )
    op.create_index("ix_relay_uploads_cid", "relay_uploads", ["cid"])


def downgrade() -> None:
    for table in ("relay_uploads", "relay_sessions", "relay_nonces", "relay_leases",
                  "relay_transactions", "relay_answers"):
        op.drop_table(table)
