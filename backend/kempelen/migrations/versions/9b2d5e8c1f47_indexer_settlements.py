"""indexer: settlements (ISettlement) — settlements, settled answers, claims, batch pool columns

An index written before this revision stored settlement events in chain_events but projected
none of their money; such a database is refused here (re-index into a fresh database) rather
than left with batch funds and balances that silently disagree with the escrow.

Revision ID: 9b2d5e8c1f47
Revises: 7c3e9a1f4b20
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "9b2d5e8c1f47"
down_revision = "7c3e9a1f4b20"
branch_labels = None
depends_on = None

# As kempelen.indexer.models.Uint256: exact NUMERIC on PostgreSQL, 78 zero-padded digits on SQLite.
UINT256 = sa.Numeric(78, 0).with_variant(sa.String(78), "sqlite")
ADDRESS = sa.String(42)
HASH = sa.String(66)
SETTLEMENT_EVENTS = ("SettlementPosted", "AnswersSettled", "EarningsClaimed")


def _uint256(name: str, **kwargs) -> sa.Column:
    return sa.Column(name, UINT256, nullable=False, **kwargs)


def _count(name: str, **kwargs) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=False, **kwargs)


def upgrade() -> None:
    bind = op.get_bind()
    events = sa.table("chain_events", sa.column("name", sa.String))
    found = bind.execute(sa.select(sa.func.count()).select_from(events)
                         .where(events.c.name.in_(SETTLEMENT_EVENTS))).scalar_one()
    if found:
        raise RuntimeError(
            f"this index holds {found} settlement events projected by an older indexer that ignored "
            "their money: re-index into a fresh database")
    zero = "0" * 78 if bind.dialect.name == "sqlite" else "0"
    with op.batch_alter_table("indexed_batches") as batch:
        batch.add_column(_count("answers_settled", server_default="0"))
        batch.add_column(_uint256("settled_rewards", server_default=zero))
        batch.add_column(_uint256("claimed", server_default=zero))
    with op.batch_alter_table("indexed_batches") as batch:  # defaults were for existing rows only
        for name in ("answers_settled", "settled_rewards", "claimed"):
            batch.alter_column(name, server_default=None)
    op.create_table(
        "indexed_settlements",
        sa.Column("chain_id", sa.BigInteger(), primary_key=True),
        sa.Column("batch_id", sa.BigInteger(), primary_key=True),
        sa.Column("sequence", sa.BigInteger(), primary_key=True),
        sa.Column("poster", ADDRESS, nullable=False),
        sa.Column("root", HASH, nullable=False),
        _uint256("cumulative_total"),
        _uint256("amount"),
        _uint256("relay_fees"),
        _count("answers"),
        sa.Column("manifest_cid", sa.String(128), nullable=False),
        _count("posted_block"),
        sa.Column("posted_tx", HASH, nullable=False),
    )
    op.create_table(
        "indexed_settled_answers",
        sa.Column("chain_id", sa.BigInteger(), primary_key=True),
        sa.Column("batch_id", sa.BigInteger(), primary_key=True),
        sa.Column("worker", ADDRESS, primary_key=True),
        sa.Column("task_index", sa.BigInteger(), primary_key=True),
        _count("sequence"),
        _count("settled_block"),
        sa.Column("settled_tx", HASH, nullable=False),
    )
    op.create_index("ix_indexed_settled_answers_worker", "indexed_settled_answers", ["chain_id", "worker"])
    op.create_table(
        "indexed_claims",
        sa.Column("chain_id", sa.BigInteger(), primary_key=True),
        sa.Column("batch_id", sa.BigInteger(), primary_key=True),
        sa.Column("worker", ADDRESS, primary_key=True),
        sa.Column("cumulative", UINT256, primary_key=True),
        _uint256("amount"),
        _count("claimed_block"),
        sa.Column("claimed_tx", HASH, nullable=False),
    )
    op.create_index("ix_indexed_claims_worker", "indexed_claims", ["chain_id", "worker"])


def downgrade() -> None:
    for table in ("indexed_claims", "indexed_settled_answers", "indexed_settlements"):
        op.drop_table(table)
    with op.batch_alter_table("indexed_batches") as batch:
        for name in ("claimed", "settled_rewards", "answers_settled"):
            batch.drop_column(name)
