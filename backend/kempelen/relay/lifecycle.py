"""Where an answer is in its life: the relay's queue status, then the indexer's view of the chain.

accepted -> submitted (tx) -> onchain -> approved | rejected | released -> paid.
The first three come from relay_answers; the rest from the indexer's tables (indexed_answers,
indexed_balances), so they are as fresh as the indexer: "onchain" until it has seen the review.
"""

from __future__ import annotations

from sqlalchemy import func, select

from kempelen.indexer.models import (
    ChainEvent,
    IndexCheckpoint,
    IndexedAnswer,
    IndexedBalance,
    IndexedBatch,
)
from kempelen.relay.repository import Db


def _paid(db: Db, chain_id: int, batch_id: int, worker: str) -> bool:
    """A credited reward is paid once the worker withdrew everything it was credited in that token."""
    token = db.execute(select(IndexedBatch.token).where(
        IndexedBatch.chain_id == chain_id, IndexedBatch.batch_id == batch_id)).scalar_one_or_none()
    if token is None:
        return False
    balance = db.execute(select(IndexedBalance).where(
        IndexedBalance.chain_id == chain_id, IndexedBalance.token == token,
        IndexedBalance.account == worker)).scalar_one_or_none()
    return balance is not None and balance.credited > 0 and balance.withdrawn >= balance.credited


def receipt_status(db: Db, row) -> dict:
    """The receipt's lifecycle fields: status, tx_hash, block_number, skip_reason, reason_cid."""
    view = {"status": row.status, "tx_hash": row.tx_hash, "block_number": row.block_number,
            "skip_reason": row.skip_reason, "reason_cid": None}
    if row.status != "onchain":
        return view
    indexed = db.get(IndexedAnswer, (row.chain_id, row.batch_id, row.worker, row.task_index))
    if indexed is None or indexed.status == "pending":
        return view
    view["status"] = indexed.status
    view["reason_cid"] = indexed.reason_cid
    if indexed.status in ("approved", "released") and _paid(db, row.chain_id, row.batch_id, row.worker):
        view["status"] = "paid"
    return view


def onchain_status_counts(db: Db, chain_id: int, batch_id: int) -> dict[str, int]:
    query = (select(IndexedAnswer.status, func.count())
             .where(IndexedAnswer.chain_id == chain_id, IndexedAnswer.batch_id == batch_id)
             .group_by(IndexedAnswer.status))
    return dict(db.execute(query).all())


def onchain_statuses(db: Db, chain_id: int, batch_id: int) -> dict[tuple[str, int], IndexedAnswer]:
    rows = db.execute(select(IndexedAnswer).where(
        IndexedAnswer.chain_id == chain_id, IndexedAnswer.batch_id == batch_id)).scalars()
    return {(a.worker, a.task_index): a for a in rows}


def onchain_answerers(db: Db, chain_id: int, batch_id: int) -> dict[int, set[str]]:
    """Workers with an on-chain answer per task (from any relay), rejected ones excluded."""
    query = select(IndexedAnswer.task_index, IndexedAnswer.worker).where(
        IndexedAnswer.chain_id == chain_id, IndexedAnswer.batch_id == batch_id,
        IndexedAnswer.status != "rejected")
    answerers: dict[int, set[str]] = {}
    for task_index, worker in db.execute(query):
        answerers.setdefault(task_index, set()).add(worker)
    return answerers


def indexed_batches(db: Db, chain_id: int, *, requester: str | None, open_after: int | None,
                    before_id: int | None, limit: int) -> list[IndexedBatch]:
    query = select(IndexedBatch).where(IndexedBatch.chain_id == chain_id)
    if requester is not None:
        query = query.where(IndexedBatch.requester == requester)
    if open_after is not None:
        query = query.where(IndexedBatch.deadline >= open_after)
    if before_id is not None:
        query = query.where(IndexedBatch.batch_id < before_id)
    return list(db.execute(query.order_by(IndexedBatch.batch_id.desc()).limit(limit)).scalars())


def balances(db: Db, chain_id: int, account: str) -> list[IndexedBalance]:
    return list(db.execute(select(IndexedBalance).where(
        IndexedBalance.chain_id == chain_id, IndexedBalance.account == account)).scalars())


def events(db: Db, chain_id: int, *, batch_id: int | None, name: str | None,
           after: tuple[int, int], limit: int) -> list[ChainEvent]:
    query = select(ChainEvent).where(ChainEvent.chain_id == chain_id)
    if batch_id is not None:
        query = query.where(ChainEvent.batch_id == batch_id)
    if name is not None:
        query = query.where(ChainEvent.name == name)
    block, log_index = after
    query = query.where((ChainEvent.block_number > block) |
                        ((ChainEvent.block_number == block) & (ChainEvent.log_index > log_index)))
    query = query.order_by(ChainEvent.block_number, ChainEvent.log_index).limit(limit)
    return list(db.execute(query).scalars())


def indexed_through(db: Db, chain_id: int) -> int | None:
    """The last block the indexer has processed for this chain, if it ran."""
    return db.execute(select(func.max(IndexCheckpoint.last_block)).where(
        IndexCheckpoint.chain_id == chain_id)).scalar()
