"""The submitter's reads and writes of relay_answers and relay_transactions.

Every function takes an open Connection and never commits: the submitter puts the writes
that must happen together (a transaction recorded and its answers marked "submitted") in one
database transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Connection,
    LargeBinary,
    Numeric,
    String,
    bindparam,
    column,
    func,
    insert,
    select,
    table,
    update,
)

from kempelen.errors import KempelenError
from kempelen.relay.fees import Fees
from kempelen.relay.models import RelayAnswer, UTCDateTime
from kempelen.relay.packing import QueuedAnswer
from kempelen.relay.receipts import AnswerOutcome
from kempelen.relay.relayer import SignedTx

answers = RelayAnswer.__table__
# relay_transactions with the submitter's own columns (revision c3f81a9e4d27) beside the
# intake's model, which does not need them.
transactions = table(
    "relay_transactions",
    column("tx_hash", String), column("chain_id", BigInteger), column("nonce", BigInteger),
    column("gas_price", Numeric(78, 0)), column("max_fee_per_gas", Numeric(78, 0)),
    column("max_priority_fee_per_gas", Numeric(78, 0)), column("gas_limit", BigInteger),
    column("answer_ids", JSON), column("status", String), column("sent_at", UTCDateTime),
    column("mined_block", BigInteger), column("raw_tx", LargeBinary), column("job_id", BigInteger),
)


class QueueChanged(KempelenError):
    """Answers changed under the submitter (another submitter ran): its write was rolled back."""


@dataclass(frozen=True)
class TxRecord:
    """A submitAnswers transaction as recorded."""

    tx_hash: str
    nonce: int
    fees: Fees
    gas_limit: int | None
    answer_ids: list[int]
    status: str
    sent_at: datetime
    raw_tx: bytes | None
    job_id: int | None = None  # a relayed settle/claim (relay/jobs.py) instead of an answer pack


def _now() -> datetime:
    return datetime.now(UTC)


def _int(value) -> int | None:
    return None if value is None else int(value)


def _queued_columns():
    return select(answers.c.id, answers.c.batch_id, answers.c.task_index, answers.c.worker,
                  answers.c.answer_digest, answers.c.signature, answers.c.accepted_at)


def _queued(row) -> QueuedAnswer:
    return QueuedAnswer(row.id, row.batch_id, row.task_index, row.worker, bytes(row.answer_digest),
                        bytes(row.signature), row.accepted_at.timestamp())


def queued(conn: Connection, chain_id: int, limit: int) -> list[QueuedAnswer]:
    """The oldest `limit` acknowledged answers not yet in a transaction, in queue order."""
    rows = conn.execute(
        _queued_columns().where(answers.c.status == "accepted", answers.c.chain_id == chain_id)
        .order_by(answers.c.id).limit(limit)
    )
    return [_queued(r) for r in rows]


def answers_by_id(conn: Connection, ids: Iterable[int]) -> list[QueuedAnswer]:
    ids = list(ids)
    if not ids:
        return []
    rows = conn.execute(_queued_columns().where(answers.c.id.in_(ids)).order_by(answers.c.id))
    return [_queued(r) for r in rows]


def record_transaction(conn: Connection, chain_id: int, tx: SignedTx, answer_ids: Sequence[int],
                       *, replaces: str | None = None, job_id: int | None = None) -> None:
    """Record a signed transaction and point its answers at it, before it is broadcast.

    A new pack takes answers from "accepted"; a replacement (`replaces` = the stuck tx hash)
    takes them over from the transaction it replaces. Either way every answer must move, or
    someone else touched the queue and the whole write is rolled back.
    """
    fees = tx.fees
    conn.execute(insert(transactions).values(
        tx_hash=tx.tx_hash, chain_id=chain_id, nonce=tx.nonce, gas_price=fees.gas_price,
        max_fee_per_gas=fees.max_fee_per_gas, max_priority_fee_per_gas=fees.max_priority_fee_per_gas,
        gas_limit=tx.gas, answer_ids=list(answer_ids), status="pending", sent_at=_now(), raw_tx=tx.raw,
        **({"job_id": job_id} if job_id is not None else {}),
    ))
    condition = (answers.c.status == "submitted") & (answers.c.tx_hash == replaces) if replaces \
        else answers.c.status == "accepted"
    moved = conn.execute(
        update(answers).where(answers.c.id.in_(list(answer_ids)), condition)
        .values(status="submitted", tx_hash=tx.tx_hash, submitted_at=_now())
    ).rowcount
    if moved != len(answer_ids):
        raise QueueChanged(f"{len(answer_ids) - moved} of {len(answer_ids)} answers of "
                           f"{tx.tx_hash} changed status under the submitter")


def pending_transactions(conn: Connection, chain_id: int) -> list[TxRecord]:
    """Transactions not known to be mined, replaced or dropped, oldest nonce first."""
    rows = conn.execute(
        select(transactions).where(transactions.c.status == "pending",
                                   (transactions.c.chain_id == chain_id) | transactions.c.chain_id.is_(None))
        .order_by(transactions.c.nonce, transactions.c.sent_at)
    )
    return [TxRecord(r.tx_hash, r.nonce,
                     Fees(_int(r.max_fee_per_gas), _int(r.max_priority_fee_per_gas), _int(r.gas_price)),
                     r.gas_limit, list(r.answer_ids), r.status, r.sent_at,
                     bytes(r.raw_tx) if r.raw_tx is not None else None, r.job_id) for r in rows]


def set_transaction_status(conn: Connection, tx_hashes: Iterable[str], status: str,
                           mined_block: int | None = None) -> None:
    hashes = list(tx_hashes)
    if hashes:
        conn.execute(update(transactions).where(transactions.c.tx_hash.in_(hashes))
                     .values(status=status, mined_block=mined_block))


def settle(conn: Connection, tx_hash: str, results: Sequence[AnswerOutcome]) -> None:
    """Write each answer's fate from the receipt of `tx_hash` (only answers still waiting on it)."""
    final = [r for r in results if r.status in ("onchain", "skipped", "settled")]
    if not final:
        return
    conn.execute(
        update(answers)
        .where(answers.c.id == bindparam("b_id"), answers.c.status == "submitted")
        .values(status=bindparam("b_status"), block_number=bindparam("b_block"),
                skip_reason=bindparam("b_reason"), tx_hash=bindparam("b_tx")),
        [{"b_id": r.answer_id, "b_status": r.status, "b_block": r.block_number,
          "b_reason": r.skip_reason, "b_tx": r.tx_hash or tx_hash} for r in final],
    )


def requeue(conn: Connection, answer_ids: Iterable[int], *, from_txs: Sequence[str] | None = None) -> int:
    """Put submitted answers back in the queue (no transaction will ever carry them)."""
    ids = list(answer_ids)
    if not ids:
        return 0
    condition = answers.c.status == "submitted"
    if from_txs is not None:
        condition = condition & answers.c.tx_hash.in_(list(from_txs))
    return conn.execute(
        update(answers).where(answers.c.id.in_(ids), condition)
        .values(status="accepted", tx_hash=None, submitted_at=None)
    ).rowcount


def repoint(conn: Connection, answer_ids: Iterable[int], from_tx: str, to_tx: str) -> None:
    """Hand answers back to `to_tx` when its replacement `from_tx` was refused."""
    conn.execute(update(answers).where(answers.c.id.in_(list(answer_ids)), answers.c.tx_hash == from_tx,
                                       answers.c.status == "submitted").values(tx_hash=to_tx))


def skip(conn: Connection, answer_id: int, reason: str) -> None:
    """Give up on an answer the chain refuses, with the reason (not retried)."""
    conn.execute(update(answers).where(answers.c.id == answer_id, answers.c.status.in_(("accepted", "submitted")))
                 .values(status="skipped", skip_reason=reason[:32]))


def orphaned(conn: Connection, chain_id: int) -> list[QueuedAnswer]:
    """Submitted answers whose transaction is not pending (dropped, replaced, failed, unknown)."""
    live = select(transactions.c.tx_hash).where(transactions.c.status == "pending")
    rows = conn.execute(
        _queued_columns()
        .where(answers.c.status == "submitted", answers.c.chain_id == chain_id,
               answers.c.tx_hash.is_(None) | answers.c.tx_hash.not_in(live))
        .order_by(answers.c.id)
    )
    return [_queued(r) for r in rows]


def mark_onchain(conn: Connection, answer_ids: Iterable[int], block_number: int | None = None,
                 tx_hash: str | None = None) -> None:
    ids = list(answer_ids)
    if ids:
        values = {"status": "onchain", "block_number": block_number}
        if tx_hash is not None:
            values["tx_hash"] = tx_hash
        conn.execute(update(answers).where(answers.c.id.in_(ids), answers.c.status == "submitted").values(**values))


def status_counts(conn: Connection, chain_id: int) -> dict[str, int]:
    rows = conn.execute(select(answers.c.status, func.count()).where(answers.c.chain_id == chain_id)
                        .group_by(answers.c.status))
    return {status: count for status, count in rows}


# -- settlement mode (relay/settlement.py) --------------------------------------------------

def held_batches(conn: Connection, chain_id: int) -> list[tuple[int, int]]:
    """(batch id, earliest hold_until) of every batch with answers held for a settlement."""
    rows = conn.execute(
        select(answers.c.batch_id, func.min(answers.c.hold_until))
        .where(answers.c.status == "held", answers.c.chain_id == chain_id)
        .group_by(answers.c.batch_id).order_by(answers.c.batch_id)
    )
    return [(batch_id, int(first)) for batch_id, first in rows]


def mark_settled(conn: Connection, chain_id: int, batch_id: int, paid: dict) -> int:
    """Held or queued answers of the batch that a settlement paid -> "settled" (never sent now).

    `paid` maps (worker lower-case, task index) to where the settlement landed (block_number,
    tx_hash); returns how many answers changed.
    """
    if not paid:
        return 0
    rows = conn.execute(
        select(answers.c.id, answers.c.worker, answers.c.task_index)
        .where(answers.c.chain_id == chain_id, answers.c.batch_id == batch_id,
               answers.c.status.in_(("held", "accepted")))
    )
    updates = [{"b_id": r.id, "b_block": paid[key].block_number, "b_tx": paid[key].tx_hash}
               for r in rows if (key := (r.worker.lower(), r.task_index)) in paid]
    if updates:
        conn.execute(
            update(answers)
            .where(answers.c.id == bindparam("b_id"),  # no IN here: executemany cannot expand it
                   (answers.c.status == "held") | (answers.c.status == "accepted"))
            .values(status="settled", block_number=bindparam("b_block"), tx_hash=bindparam("b_tx")),
            updates,
        )
    return len(updates)


def due_held(conn: Connection, chain_id: int, batch_id: int, now: int) -> list[tuple[int, str]]:
    """(id, worker) of the batch's held answers past their hold_until, in queue order."""
    rows = conn.execute(
        select(answers.c.id, answers.c.worker)
        .where(answers.c.chain_id == chain_id, answers.c.batch_id == batch_id, answers.c.status == "held",
               answers.c.hold_until <= now)
        .order_by(answers.c.id)
    )
    return [(r.id, r.worker) for r in rows]


def release(conn: Connection, answer_ids: Iterable[int]) -> int:
    """Held answers -> "accepted": the direct path."""
    ids = list(answer_ids)
    if not ids:
        return 0
    return conn.execute(
        update(answers).where(answers.c.id.in_(ids), answers.c.status == "held").values(status="accepted")
    ).rowcount


def release_held(conn: Connection, chain_id: int, batch_id: int, now: int) -> int:
    """Held answers of the batch past their hold_until -> "accepted": the direct path."""
    return release(conn, [answer_id for answer_id, _ in due_held(conn, chain_id, batch_id, now)])


def rehold(conn: Connection, answer_ids: Iterable[int]) -> int:
    """Submitted answers the escrow skipped as SettlementSealed (their worker has settled words in
    the batch, still sealed) -> "held" and due at once: the next release_held marks them settled
    if a settlement paid them, else has the worker's words opened and sends them again."""
    ids = list(answer_ids)
    if not ids:
        return 0
    return conn.execute(
        update(answers)
        .where(answers.c.id.in_(ids), answers.c.status == "submitted")
        .values(status="held", tx_hash=None, submitted_at=None, skip_reason=None,
                hold_until=func.coalesce(answers.c.hold_until, 0))
    ).rowcount
