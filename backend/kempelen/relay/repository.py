"""Queries and writes of the relay's tables. The caller owns the transaction: nothing here commits.

Functions take a Session or a Connection (both `execute` Core statements), so the intake's
group commit and the API's per-request sessions share them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from kempelen.relay.models import (
    RelayAnswer,
    RelayLease,
    RelayNonce,
    RelaySession,
    RelayUpload,
)

Db = Session | Connection
AnswerKey = tuple[int, int, str, int]  # chain_id, batch_id, worker, task_index

_answers = RelayAnswer.__table__
# What receipts show; the payload stays out of list queries.
RECEIPT_COLUMNS = (_answers.c.id, _answers.c.receipt_id, _answers.c.chain_id, _answers.c.batch_id,
                   _answers.c.task_index, _answers.c.worker, _answers.c.answer_digest,
                   _answers.c.payload_cid, _answers.c.status, _answers.c.skip_reason,
                   _answers.c.tx_hash, _answers.c.accepted_at, _answers.c.submitted_at,
                   _answers.c.block_number)


def _insert(db: Db, table):
    dialect = (db.get_bind() if isinstance(db, Session) else db).dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


# -- answers ---------------------------------------------------------------------------

def insert_answers(db: Db, rows: list[dict]) -> list[str]:
    """Insert answers, skipping any whose key or receipt exists; return the receipts inserted."""
    if not rows:
        return []
    statement = _insert(db, _answers).on_conflict_do_nothing().returning(_answers.c.receipt_id)
    return [row[0] for row in db.execute(statement, rows)]


def answers_by_keys(db: Db, keys: set[AnswerKey]) -> dict[AnswerKey, object]:
    """Stored answers by (chain_id, batch_id, worker, task_index)."""
    if not keys:
        return {}
    c = _answers.c
    condition = or_(*(and_(c.chain_id == k[0], c.batch_id == k[1], c.worker == k[2], c.task_index == k[3])
                      for k in keys))
    rows = db.execute(select(*RECEIPT_COLUMNS).where(condition))
    return {(r.chain_id, r.batch_id, r.worker, r.task_index): r for r in rows}


def unsubmitted_payloads(db: Db):
    """(payload_cid, payload) of answers not yet on-chain: the ones a crash may not have pinned."""
    query = select(_answers.c.payload_cid, _answers.c.payload).where(
        _answers.c.status.in_(("accepted", "submitted", "held")))
    return db.execute(query.execution_options(yield_per=1000))


def answer_by_receipt(db: Db, receipt_id: str):
    return db.execute(select(*RECEIPT_COLUMNS).where(_answers.c.receipt_id == receipt_id)).first()


def batch_answers(db: Db, chain_id: int, batch_id: int, *, after_id: int = 0, limit: int = 1000,
                  with_payload: bool = False) -> list:
    """A batch's answers in queue order, `limit` at a time after `after_id` (for exports)."""
    columns = (*RECEIPT_COLUMNS, _answers.c.payload, _answers.c.signature) if with_payload else RECEIPT_COLUMNS
    query = (select(*columns)
             .where(_answers.c.chain_id == chain_id, _answers.c.batch_id == batch_id,
                    _answers.c.id > after_id)
             .order_by(_answers.c.id).limit(limit))
    return list(db.execute(query))


def batch_status_counts(db: Db, chain_id: int, batch_id: int) -> dict[str, int]:
    query = (select(_answers.c.status, func.count())
             .where(_answers.c.chain_id == chain_id, _answers.c.batch_id == batch_id)
             .group_by(_answers.c.status))
    return {status: count for status, count in db.execute(query)}


def worker_answers(db: Db, chain_id: int, worker: str, *, after_id: int = 0, limit: int = 100) -> list:
    query = (select(*RECEIPT_COLUMNS)
             .where(_answers.c.chain_id == chain_id, _answers.c.worker == worker,
                    _answers.c.id > after_id)
             .order_by(_answers.c.id).limit(limit))
    return list(db.execute(query))


def task_answerers(db: Db, chain_id: int, batch_id: int) -> dict[int, set[str]]:
    """Workers with an answer here per task of a batch (skipped ones took no slot)."""
    query = select(_answers.c.task_index, _answers.c.worker).where(
        _answers.c.chain_id == chain_id, _answers.c.batch_id == batch_id, _answers.c.status != "skipped")
    answerers: dict[int, set[str]] = {}
    for task_index, worker in db.execute(query):
        answerers.setdefault(task_index, set()).add(worker)
    return answerers


# -- leases ----------------------------------------------------------------------------

def active_lessees(db: Db, batch_id: int, now: datetime, *, excluding: str | None = None) -> dict[int, set[str]]:
    """Workers holding an unexpired lease per task of a batch, optionally leaving one out."""
    query = select(RelayLease.task_index, RelayLease.worker).where(
        RelayLease.batch_id == batch_id, RelayLease.expires_at > now)
    if excluding is not None:
        query = query.where(RelayLease.worker != excluding)
    lessees: dict[int, set[str]] = {}
    for task_index, worker in db.execute(query):
        lessees.setdefault(task_index, set()).add(worker)
    return lessees


def lease_of(db: Db, batch_id: int, task_index: int, worker: str) -> RelayLease | None:
    return db.execute(select(RelayLease).where(
        RelayLease.batch_id == batch_id, RelayLease.task_index == task_index,
        RelayLease.worker == worker)).scalar_one_or_none()


def put_lease(db: Session, batch_id: int, task_index: int, worker: str, expires_at: datetime) -> RelayLease:
    """Create or renew the worker's lease on a task slot."""
    lease = lease_of(db, batch_id, task_index, worker)
    if lease is None:
        lease = RelayLease(batch_id=batch_id, task_index=task_index, worker=worker, expires_at=expires_at)
        db.add(lease)
    else:
        lease.expires_at = expires_at
    db.flush()
    return lease


def delete_lease(db: Db, batch_id: int, task_index: int, worker: str) -> bool:
    result = db.execute(delete(RelayLease).where(
        RelayLease.batch_id == batch_id, RelayLease.task_index == task_index,
        RelayLease.worker == worker))
    return result.rowcount > 0


def worker_leases(db: Db, worker: str, now: datetime) -> list[RelayLease]:
    query = (select(RelayLease).where(RelayLease.worker == worker, RelayLease.expires_at > now)
             .order_by(RelayLease.expires_at))
    return list(db.execute(query).scalars())


# -- Sign-In with Ethereum -------------------------------------------------------------

def add_nonce(db: Db, nonce: str, issued_at: datetime) -> None:
    db.execute(_insert(db, RelayNonce.__table__).values(nonce=nonce, used=False, issued_at=issued_at))


def consume_nonce(db: Db, nonce: str, issued_after: datetime) -> bool:
    """Mark a nonce used; False if it was never issued, is already used, or expired."""
    result = db.execute(update(RelayNonce)
                        .where(RelayNonce.nonce == nonce, RelayNonce.used.is_(False),
                               RelayNonce.issued_at > issued_after)
                        .values(used=True))
    return result.rowcount == 1


def purge_nonces(db: Db, issued_before: datetime) -> None:
    db.execute(delete(RelayNonce).where(RelayNonce.issued_at < issued_before))


def add_session(db: Db, token_hash: str, address: str, expires_at: datetime) -> None:
    db.execute(_insert(db, RelaySession.__table__).values(
        token_hash=token_hash, address=address, expires_at=expires_at))


def session_address(db: Db, token_hash: str, now: datetime) -> str | None:
    return db.execute(select(RelaySession.address).where(
        RelaySession.token_hash == token_hash, RelaySession.expires_at > now)).scalar_one_or_none()


def delete_sessions_of(db: Db, address: str) -> None:
    db.execute(delete(RelaySession).where(RelaySession.address == address))


# -- uploads ---------------------------------------------------------------------------

def record_upload(db: Db, cid: str, uploader: str, size: int, kind: str, created_at: datetime) -> None:
    statement = _insert(db, RelayUpload.__table__).values(
        cid=cid, uploader=uploader, size=size, kind=kind, created_at=created_at)
    db.execute(statement.on_conflict_do_nothing())


def uploads_of(db: Db, uploader: str, *, limit: int = 100) -> list[RelayUpload]:
    query = (select(RelayUpload).where(RelayUpload.uploader == uploader)
             .order_by(RelayUpload.id.desc()).limit(limit))
    return list(db.execute(query).scalars())

