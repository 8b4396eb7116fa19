"""The relay's tables: the durable answer queue, its transactions, and API state (SIWE, leases, uploads).

Statuses after "onchain" (approved / rejected / released / paid) are not stored here:
they come from the indexer's tables, joined on (chain_id, batch_id, worker, task_index).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from kempelen.db import Base

# SQLite only auto-increments an INTEGER PRIMARY KEY (its rowid); PostgreSQL gets a bigint identity.
QueueId = BigInteger().with_variant(Integer, "sqlite")
Uint256 = Numeric(78, 0)


class UTCDateTime(TypeDecorator):
    """A timestamp stored in UTC and always read back timezone-aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: pass a timezone-aware UTC time")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


class RelayAnswer(Base):
    """A signed answer the relay acknowledged (202): queued in id order for the submitter."""

    __tablename__ = "relay_answers"
    __table_args__ = (
        UniqueConstraint("chain_id", "batch_id", "worker", "task_index", name="uq_relay_answers_key"),
        UniqueConstraint("receipt_id", name="uq_relay_answers_receipt_id"),
        Index("ix_relay_answers_status_id", "status", "id"),
        Index("ix_relay_answers_worker", "worker"),
    )

    id: Mapped[int] = mapped_column(QueueId, primary_key=True, autoincrement=True)
    # 0x hex of the EIP-712 digest the worker signed: anyone can recompute and verify it.
    receipt_id: Mapped[str] = mapped_column(String(66))
    chain_id: Mapped[int] = mapped_column(BigInteger)
    batch_id: Mapped[int] = mapped_column(BigInteger)
    task_index: Mapped[int] = mapped_column(BigInteger)
    worker: Mapped[str] = mapped_column(String(42))  # checksum address
    answer_digest: Mapped[bytes] = mapped_column(LargeBinary(32))
    signature: Mapped[bytes] = mapped_column(LargeBinary(65))
    payload: Mapped[bytes] = mapped_column(LargeBinary)  # the answer bytes, durable before the 202
    payload_cid: Mapped[str] = mapped_column(String(100))
    # accepted|submitted|onchain|skipped; a settlement-mode batch's answers start "held" and end
    # "settled" (paid by a requester's settlement) or go on to "accepted" at hold_until.
    status: Mapped[str] = mapped_column(String(16), default="accepted")
    skip_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    accepted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Held answers only: unix time (chain clock) after which they take the direct path.
    hold_until: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class RelayTransaction(Base):
    """A submitAnswers transaction the submitter signed (recorded before it is broadcast)."""

    __tablename__ = "relay_transactions"

    tx_hash: Mapped[str] = mapped_column(String(66), primary_key=True)
    nonce: Mapped[int] = mapped_column(BigInteger, index=True)  # ix_relay_transactions_nonce
    gas_price: Mapped[int | None] = mapped_column(Uint256, nullable=True)  # legacy chains
    max_fee_per_gas: Mapped[int | None] = mapped_column(Uint256, nullable=True)
    max_priority_fee_per_gas: Mapped[int | None] = mapped_column(Uint256, nullable=True)
    answer_ids: Mapped[list[int]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|mined|replaced|dropped|failed
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    mined_block: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class RelayJob(Base):
    """A settle or claimMany call the relay was asked to send, or an openSettled its submitter
    queued itself at a batch's fallback (its submitter sends them all)."""

    __tablename__ = "relay_jobs"
    __table_args__ = (Index("ix_relay_jobs_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(QueueId, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))  # settle|claim|open
    batch_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # settle and open
    # claim: the worker who asked; open: the worker whose settled words it opens
    requested_by: Mapped[str | None] = mapped_column(String(42), nullable=True)
    calldata: Mapped[bytes] = mapped_column(LargeBinary)  # to the escrow
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued|sent|mined|failed
    tx_hash: Mapped[str | None] = mapped_column(String(66), nullable=True)
    block_number: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(String(300), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RelayLease(Base):
    """A worker's hold on one answer slot of a task, until expires_at."""

    __tablename__ = "relay_leases"
    __table_args__ = (UniqueConstraint("batch_id", "task_index", "worker", name="uq_relay_leases_slot"),)

    id: Mapped[int] = mapped_column(QueueId, primary_key=True, autoincrement=True)
    batch_id: Mapped[int] = mapped_column(BigInteger)
    task_index: Mapped[int] = mapped_column(BigInteger)
    worker: Mapped[str] = mapped_column(String(42), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RelayNonce(Base):
    """A Sign-In with Ethereum nonce the relay issued; good for one login."""

    __tablename__ = "relay_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    used: Mapped[bool] = mapped_column(Boolean, default=False)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RelaySession(Base):
    """A signed-in address; only an HMAC of the bearer token is stored."""

    __tablename__ = "relay_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    address: Mapped[str] = mapped_column(String(42), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RelayUpload(Base):
    """Content a signed-in address pinned through the relay (tasks, manifests, reasons)."""

    __tablename__ = "relay_uploads"
    __table_args__ = (UniqueConstraint("cid", "uploader", name="uq_relay_uploads_cid_uploader"),)

    id: Mapped[int] = mapped_column(QueueId, primary_key=True, autoincrement=True)
    cid: Mapped[str] = mapped_column(String(100), index=True)
    uploader: Mapped[str] = mapped_column(String(42))
    size: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(16))  # task|manifest|reason|answer
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
