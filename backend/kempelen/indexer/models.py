"""The indexer's tables: raw events, the reorg window and checkpoint, and projections of them.

Every projection is a function of `chain_events` alone, so it can be rebuilt after a reorg.
Addresses are checksummed strings, byte strings 0x hex, CIDs their string form.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, DateTime, Index, Integer, Numeric, String, TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from kempelen.db import Base

_UINT256_DIGITS = 78


class Uint256(TypeDecorator):
    """A uint256 amount as a Python int: NUMERIC(78, 0) on PostgreSQL.

    SQLite has no exact integers above 2**63 (NUMERIC silently turns them into floats,
    and 10 ETH in wei is already above), so there it is stored as 78 zero-padded digits:
    exact, and text order equals numeric order.
    """

    impl = Numeric(_UINT256_DIGITS, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(_UINT256_DIGITS))
        return dialect.type_descriptor(Numeric(_UINT256_DIGITS, 0))

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        value = int(value)
        if not 0 <= value < 2**256:
            raise ValueError(f"not a uint256: {value}")
        return f"{value:0{_UINT256_DIGITS}d}" if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        return None if value is None else int(value)


EventArgs = JSON().with_variant(JSONB(), "postgresql")
Address = String(42)
Hash = String(66)


class ChainEvent(Base):
    """Every escrow and reputation event; args as JSON (big ints as strings, bytes as 0x hex)."""

    __tablename__ = "chain_events"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    log_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    block_hash: Mapped[str] = mapped_column(Hash)
    transaction_hash: Mapped[str] = mapped_column(Hash)
    transaction_index: Mapped[int] = mapped_column(Integer)
    address: Mapped[str] = mapped_column(Address)
    name: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict] = mapped_column(EventArgs)
    # The batch an event concerns, so a reorg can rebuild just the batches it touched.
    batch_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)

    __table_args__ = (Index("ix_chain_events_batch", "chain_id", "batch_id"),)


class IndexedBlock(Base):
    """Hashes of recently indexed blocks (those with events, and range ends): the reorg window."""

    __tablename__ = "indexed_blocks"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[str] = mapped_column(Hash)


class IndexCheckpoint(Base):
    """How far the indexer got, written in the same transaction as the rows it covers."""

    __tablename__ = "index_checkpoints"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    escrow: Mapped[str] = mapped_column(Address, primary_key=True)
    reputation: Mapped[str] = mapped_column(Address)
    first_block: Mapped[int] = mapped_column(BigInteger)
    last_block: Mapped[int] = mapped_column(BigInteger)  # first_block - 1 before any range
    last_block_hash: Mapped[str | None] = mapped_column(Hash, nullable=True)
    # Block hashes below this were pruned from indexed_blocks: a reorg below it is too deep.
    pruned_below: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(UTC)
    )


class IndexedBatch(Base):
    """A batch: its terms, its money (funds unallocated, pending answers) and running totals."""

    __tablename__ = "indexed_batches"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    batch_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    requester: Mapped[str] = mapped_column(Address, index=True)
    token: Mapped[str] = mapped_column(Address)
    task_count: Mapped[int] = mapped_column(BigInteger)
    answers_per_task: Mapped[int] = mapped_column(Integer)
    reward: Mapped[int] = mapped_column(Uint256)
    relay_fee: Mapped[int] = mapped_column(Uint256)
    deadline: Mapped[int] = mapped_column(BigInteger)
    review_window: Mapped[int] = mapped_column(BigInteger)
    min_reputation: Mapped[int] = mapped_column(BigInteger)
    gold_commitment: Mapped[str] = mapped_column(Hash)
    manifest_cid: Mapped[str] = mapped_column(String(128))
    deposit: Mapped[int] = mapped_column(Uint256)
    funds: Mapped[int] = mapped_column(Uint256)  # unallocated, as the contract's batch.funds
    pending: Mapped[int] = mapped_column(BigInteger)  # answers awaiting review
    answers_submitted: Mapped[int] = mapped_column(BigInteger)
    answers_approved: Mapped[int] = mapped_column(BigInteger)
    answers_rejected: Mapped[int] = mapped_column(BigInteger)
    answers_released: Mapped[int] = mapped_column(BigInteger)
    rewards_paid: Mapped[int] = mapped_column(Uint256)  # credited to workers: reviews and claims
    relay_fees_paid: Mapped[int] = mapped_column(Uint256)  # to submitters and settlement posters
    bonuses_paid: Mapped[int] = mapped_column(Uint256)
    topped_up: Mapped[int] = mapped_column(Uint256)
    reclaimed: Mapped[int] = mapped_column(Uint256)
    # Settlements (ISettlement): rewards moved from funds to the claimable pool, and claimed from it.
    answers_settled: Mapped[int] = mapped_column(BigInteger)
    settled_rewards: Mapped[int] = mapped_column(Uint256)  # sum of amounts: the cumulativeTotal
    claimed: Mapped[int] = mapped_column(Uint256)  # pool = settled_rewards - claimed
    gold_cid: Mapped[str | None] = mapped_column(String(128), nullable=True)
    gold_salt: Mapped[str | None] = mapped_column(Hash, nullable=True)
    created_block: Mapped[int] = mapped_column(BigInteger)
    created_tx: Mapped[str] = mapped_column(Hash)
    updated_block: Mapped[int] = mapped_column(BigInteger)


class IndexedAnswer(Base):
    """One answer of a worker to a task; status follows review and release."""

    __tablename__ = "indexed_answers"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    batch_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    worker: Mapped[str] = mapped_column(Address, primary_key=True)
    task_index: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    answer_digest: Mapped[str] = mapped_column(Hash)
    answer_cid: Mapped[str] = mapped_column(String(128))
    relayer: Mapped[str] = mapped_column(Address)
    status: Mapped[str] = mapped_column(String(16))  # pending | approved | rejected | released
    reason_cid: Mapped[str | None] = mapped_column(String(128), nullable=True)
    submitted_block: Mapped[int] = mapped_column(BigInteger)
    submitted_tx: Mapped[str] = mapped_column(Hash)
    reviewed_block: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    reviewed_tx: Mapped[str | None] = mapped_column(Hash, nullable=True)

    __table_args__ = (Index("ix_indexed_answers_worker", "chain_id", "worker"),)


class IndexedSettlement(Base):
    """A settlement posted for a batch (SettlementPosted): its root, totals and manifest."""

    __tablename__ = "indexed_settlements"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    batch_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    poster: Mapped[str] = mapped_column(Address)
    root: Mapped[str] = mapped_column(Hash)
    cumulative_total: Mapped[int] = mapped_column(Uint256)
    amount: Mapped[int] = mapped_column(Uint256)  # rewards newly settled: funds -> claimable pool
    relay_fees: Mapped[int] = mapped_column(Uint256)  # funds -> the poster's balance
    answers: Mapped[int] = mapped_column(BigInteger)
    manifest_cid: Mapped[str] = mapped_column(String(128))
    posted_block: Mapped[int] = mapped_column(BigInteger)
    posted_tx: Mapped[str] = mapped_column(Hash)


class IndexedSettledAnswer(Base):
    """One answer a settlement paid (a set bit of AnswersSettled): a worker's task, by sequence.
    Entries with no bits (a later settlement restating a worker's earlier words) pay nothing and
    give no row."""

    __tablename__ = "indexed_settled_answers"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    batch_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    worker: Mapped[str] = mapped_column(Address, primary_key=True)
    task_index: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger)
    settled_block: Mapped[int] = mapped_column(BigInteger)
    settled_tx: Mapped[str] = mapped_column(Hash)

    __table_args__ = (Index("ix_indexed_settled_answers_worker", "chain_id", "worker"),)


class IndexedClaim(Base):
    """A worker's claim from a batch's pool (EarningsClaimed); cumulative rises with each claim."""

    __tablename__ = "indexed_claims"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    batch_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    worker: Mapped[str] = mapped_column(Address, primary_key=True)
    cumulative: Mapped[int] = mapped_column(Uint256, primary_key=True)
    amount: Mapped[int] = mapped_column(Uint256)
    claimed_block: Mapped[int] = mapped_column(BigInteger)
    claimed_tx: Mapped[str] = mapped_column(Hash)

    __table_args__ = (Index("ix_indexed_claims_worker", "chain_id", "worker"),)


class IndexedSettledWordsOpened(Base):
    """A worker whose settled words in a batch were opened (SettledWordsOpened): its other answers
    can take the direct path from then on, and later settlements of it add to the stored words.
    Moves no money. The words themselves are its `indexed_settled_answers` rows."""

    __tablename__ = "indexed_settled_words_opened"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    batch_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    worker: Mapped[str] = mapped_column(Address, primary_key=True)
    opened_block: Mapped[int] = mapped_column(BigInteger)
    opened_tx: Mapped[str] = mapped_column(Hash)
    opened_log_index: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_indexed_settled_words_opened_worker", "chain_id", "worker"),)


class IndexedBalance(Base):
    """What the escrow credited to an account (rewards, claims, relay fees, bonuses) and paid out."""

    __tablename__ = "indexed_balances"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    token: Mapped[str] = mapped_column(Address, primary_key=True)
    account: Mapped[str] = mapped_column(Address, primary_key=True)
    credited: Mapped[int] = mapped_column(Uint256)
    withdrawn: Mapped[int] = mapped_column(Uint256)


class IndexedReputation(Base):
    """Review outcomes of an address as a worker and as a requester (Reputation events)."""

    __tablename__ = "indexed_reputation"

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    address: Mapped[str] = mapped_column(Address, primary_key=True)
    worker_approved: Mapped[int] = mapped_column(BigInteger)
    worker_rejected: Mapped[int] = mapped_column(BigInteger)
    worker_released: Mapped[int] = mapped_column(BigInteger)
    requester_approved: Mapped[int] = mapped_column(BigInteger)
    requester_rejected: Mapped[int] = mapped_column(BigInteger)
    requester_released: Mapped[int] = mapped_column(BigInteger)


PROJECTION_TABLES = (IndexedBatch, IndexedAnswer, IndexedSettlement, IndexedSettledAnswer, IndexedClaim,
                     IndexedSettledWordsOpened, IndexedBalance, IndexedReputation)
# Rows that belong to one batch: a reorg deletes and rebuilds them for the batches it touched.
BATCH_TABLES = (IndexedAnswer, IndexedSettlement, IndexedSettledAnswer, IndexedClaim, IndexedSettledWordsOpened,
                IndexedBatch)
