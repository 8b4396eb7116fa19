"""indexer: initial tables (chain events, reorg window, checkpoints, projections)

Revision ID: 7c3e9a1f4b20
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "7c3e9a1f4b20"
down_revision = None
branch_labels = ("indexer",)
depends_on = None

# As kempelen.indexer.models.Uint256: exact NUMERIC on PostgreSQL, 78 zero-padded digits on SQLite.
UINT256 = sa.Numeric(78, 0).with_variant(sa.String(78), "sqlite")
ARGS = sa.JSON().with_variant(JSONB(), "postgresql")
ADDRESS = sa.String(42)
HASH = sa.String(66)


def _uint256(name: str) -> sa.Column:
    return sa.Column(name, UINT256, nullable=False)


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "chain_events",
        sa.Column("chain_id", sa.BigInteger(), primary_key=True),
        sa.Column("block_number", sa.BigInteger(), primary_key=True),
        sa.Column("log_index", sa.Integer(), primary_key=True),
        sa.Column("block_hash", HASH, nullable=False),
        sa.Column("transaction_hash", HASH, nullable=False),
        sa.Column("transaction_index", sa.Integer(), nullable=False),
        sa.Column("address", ADDRESS, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("args", ARGS, nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_chain_events_batch", "chain_events", ["chain_id", "batch_id"])
    op.create_table(
        "indexed_blocks",
        sa.Column("chain_id", sa.BigInteger(), primary_key=True),
        sa.Column("number", sa.BigInteger(), primary_key=True),
        sa.Column("hash", HASH, nullable=False),
    )
    op.create_table(
        "index_checkpoints",
        sa.Column("chain_id", sa.BigInteger(), primary_key=True),
        sa.Column("escrow", ADDRESS, primary_key=True),
        sa.Column("reputation", ADDRESS, nullable=False),
        sa.Column("first_block", sa.BigInteger(), nullable=False),
        sa.Column("last_block", sa.BigInteger(), nullable=False),
        sa.Column("last_block_hash", HASH, nullable=True),
        sa.Column("pruned_below", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "indexed_batches",
        sa.Column("chain_id", sa.BigInteger(), primary_key=True),
        sa.Column("batch_id", sa.BigInteger(), primary_key=True),
        sa.Column("requester", ADDRESS, nullable=False),
        sa.Column("token", ADDRESS, nullable=False),
        _count("task_count"),
        sa.Column("answers_per_task", sa.Integer(), nullable=False),
        _uint256("reward"),
        _uint256("relay_fee"),
        _count("deadline"),
        _count("review_window"),
        _count("min_reputation"),
        sa.Column("gold_commitment", HASH, nullable=False),
        sa.Column("manifest_cid", sa.String(128), nullable=False),
        _uint256("deposit"),
        _uint256("funds"),
        _count("pending"),
        _count("answers_submitted"),
        _count("answers_approved"),
        _count("answers_rejected"),
        _count("answers_released"),
        _uint256("rewards_paid"),
        _uint256("relay_fees_paid"),
        _uint256("bonuses_paid"),
        _uint256("topped_up"),
        _uint256("reclaimed"),
        sa.Column("gold_cid", sa.String(128), nullable=True),
        sa.Column("gold_salt", HASH, nullable=True),
        _count("created_block"),
        sa.Column("created_tx", HASH, nullable=False),
        _count("updated_block"),
    )
    op.create_index("ix_indexed_batches_requester", "indexed_batches", ["requester"])
    op.create_table(
        "indexed_answers",
        sa.Column("chain_id", sa.BigInteger(), primary_key=True),
        sa.Column("batch_id", sa.BigInteger(), primary_key=True),
        sa.Column("worker", ADDRESS, primary_key=True),
        sa.Column("task_index", sa.BigInteger(), primary_key=True),
        sa.Column("answer_digest", HASH, nullable=False),
        sa.Column("answer_cid", sa.String(128), nullable=False),
        sa.Column("relayer", ADDRESS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason_cid", sa.String(128), nullable=True),
        _count("submitted_block"),
        sa.Column("submitted_tx", HASH, nullable=False),
        sa.Column("reviewed_block", sa.BigInteger(), nullable=True),
        sa.Column("reviewed_tx", HASH, nullable=True),
    )
    op.create_index("ix_indexed_answers_worker", "indexed_answers", ["chain_id", "worker"])
    op.create_table(
        "indexed_balances",
        sa.Column("chain_id", sa.BigInteger(), primary_key=True),
        sa.Column("token", ADDRESS, primary_key=True),
        sa.Column("account", ADDRESS, primary_key=True),
        _uint256("credited"),
        _uint256("withdrawn"),
    )
    op.create_table(
        "indexed_reputation",
        sa.Column("chain_id", sa.BigInteger(), primary_key=True),
        sa.Column("address", ADDRESS, primary_key=True),
        *(_count(f"{role}_{outcome}") for role in ("worker", "requester")
          for outcome in ("approved", "rejected", "released")),
    )


def downgrade() -> None:
    for table in ("indexed_reputation", "indexed_balances", "indexed_answers", "indexed_batches",
                  "index_checkpoints", "indexed_blocks", "chain_events"):
        op.drop_table(table)
