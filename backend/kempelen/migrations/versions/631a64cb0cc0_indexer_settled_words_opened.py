"""indexer: opened settled words (ISettlement's SettledWordsOpened) — one row per opened worker

The escrow keeps a worker's settled words in a batch sealed (a digest) until someone opens them
with `openSettled`, after which the worker's other answers can take the direct path. This adds
`indexed_settled_words_opened` and fills it from the SettledWordsOpened events an index already
holds in chain_events (an indexer built on this ABI stored them before it projected them).

Revision ID: 631a64cb0cc0
Revises: 9b2d5e8c1f47
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "631a64cb0cc0"
down_revision = "9b2d5e8c1f47"
branch_labels = None
depends_on = None

ADDRESS = sa.String(42)
HASH = sa.String(66)
ARGS = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    opened = op.create_table(
        "indexed_settled_words_opened",
        sa.Column("chain_id", sa.BigInteger(), primary_key=True),
        sa.Column("batch_id", sa.BigInteger(), primary_key=True),
        sa.Column("worker", ADDRESS, primary_key=True),
        sa.Column("opened_block", sa.BigInteger(), nullable=False),
        sa.Column("opened_tx", HASH, nullable=False),
        sa.Column("opened_log_index", sa.Integer(), nullable=False),
    )
    op.create_index("ix_indexed_settled_words_opened_worker", "indexed_settled_words_opened",
                    ["chain_id", "worker"])
    events = sa.table("chain_events", sa.column("chain_id", sa.BigInteger), sa.column("block_number", sa.BigInteger),
                      sa.column("log_index", sa.Integer), sa.column("transaction_hash", HASH),
                      sa.column("name", sa.String), sa.column("args", ARGS))
    found = op.get_bind().execute(
        sa.select(events.c.chain_id, events.c.block_number, events.c.log_index, events.c.transaction_hash,
                  events.c.args)
        .where(events.c.name == "SettledWordsOpened")
        .order_by(events.c.chain_id, events.c.block_number, events.c.log_index)).all()
    rows: dict[tuple, dict] = {}
    for chain_id, block, log_index, tx, args in found:
        key = (chain_id, int(args["batchId"]), args["worker"])
        rows.setdefault(key, {"chain_id": chain_id, "batch_id": key[1], "worker": key[2], "opened_block": block,
                              "opened_tx": tx, "opened_log_index": log_index})
    if rows:
        op.bulk_insert(opened, list(rows.values()))


def downgrade() -> None:
    op.drop_index("ix_indexed_settled_words_opened_worker", table_name="indexed_settled_words_opened")
    op.drop_table("indexed_settled_words_opened")
