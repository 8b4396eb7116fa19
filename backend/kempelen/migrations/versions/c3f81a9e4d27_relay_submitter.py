"""relay: submitter columns (signed raw transaction, chain, gas limit) and pending-transaction index

The raw signed transaction is stored before it is broadcast, so after a crash the submitter
rebroadcasts exactly the same transaction (same hash, same nonce) instead of deciding anew
whether an unseen transaction was ever sent.

Revision ID: c3f81a9e4d27
Revises: 5a1c0e7d2b01
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "c3f81a9e4d27"
down_revision = "5a1c0e7d2b01"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("relay_transactions", sa.Column("chain_id", sa.BigInteger(), nullable=True))
    op.add_column("relay_transactions", sa.Column("raw_tx", sa.LargeBinary(), nullable=True))
    op.add_column("relay_transactions", sa.Column("gas_limit", sa.BigInteger(), nullable=True))
    op.create_index("ix_relay_transactions_status_nonce", "relay_transactions", ["status", "nonce"])


def downgrade() -> None:
    op.drop_index("ix_relay_transactions_status_nonce", table_name="relay_transactions")
    with op.batch_alter_table("relay_transactions") as batch:
        batch.drop_column("gas_limit")
        batch.drop_column("raw_tx")
        batch.drop_column("chain_id")
