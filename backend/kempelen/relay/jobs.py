"""Relayed calls other than answers: settlements and claims anyone asked this relay to send, and
the relay's own openSettled calls.

The API checks a request (signature, manifest, a dry run against the escrow) and queues its
calldata here; the submitter sends it with the relayer key beside its answer packs, so one
process owns the key's nonces. Lifecycle: queued -> sent (tx_hash) -> mined | failed (error).
An "open" job is queued by the submitter itself at a batch's fallback (relay/submitter.py
release_held): `openSettled` of a worker whose settled words are sealed, so that its held answers
can take the direct path; `requested_by` names that worker.
Queued claims of several workers may share one claimMany transaction (relay/settlement.py
merge_claims): each keeps its own job, and every job names the transaction that carries it.
Every function takes an open Session or Connection and never commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import insert, select, update

from kempelen.relay.models import RelayJob, utcnow

jobs = RelayJob.__table__
KINDS = ("settle", "claim", "open")


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    batch_id: int | None
    requested_by: str | None
    calldata: bytes
    status: str
    tx_hash: str | None
    block_number: int | None
    error: str | None

    def as_json(self) -> dict:
        return {"job_id": self.id, "kind": self.kind, "batch_id": self.batch_id, "status": self.status,
                "tx_hash": self.tx_hash, "block_number": self.block_number, "error": self.error}


def _job(row) -> Job:
    return Job(row.id, row.kind, row.batch_id, row.requested_by, bytes(row.calldata), row.status,
               row.tx_hash, row.block_number, row.error)


def add(db, chain_id: int, kind: str, calldata: bytes, *, batch_id: int | None = None,
        requested_by: str | None = None) -> int:
    if kind not in KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    result = db.execute(insert(jobs).values(
        chain_id=chain_id, kind=kind, batch_id=batch_id, requested_by=requested_by, calldata=calldata,
        status="queued", created_at=utcnow()).returning(jobs.c.id))
    return result.scalar_one()


def get(db, job_id: int) -> Job | None:
    row = db.execute(select(jobs).where(jobs.c.id == job_id)).first()
    return _job(row) if row else None


def next_queued(db, chain_id: int) -> Job | None:
    row = db.execute(select(jobs).where(jobs.c.chain_id == chain_id, jobs.c.status == "queued")
                     .order_by(jobs.c.id).limit(1)).first()
    return _job(row) if row else None


def queued_claims(db, chain_id: int, limit: int = 1000) -> list[Job]:
    """Queued claim jobs, oldest first: candidates to share one claimMany."""
    rows = db.execute(select(jobs).where(jobs.c.chain_id == chain_id, jobs.c.status == "queued",
                                         jobs.c.kind == "claim").order_by(jobs.c.id).limit(limit))
    return [_job(row) for row in rows]


def opening(db, chain_id: int, batch_id: int) -> set[str]:
    """Workers (lower-case) of the batch whose openSettled job is queued or sent."""
    rows = db.execute(select(jobs.c.requested_by).where(
        jobs.c.chain_id == chain_id, jobs.c.kind == "open", jobs.c.batch_id == batch_id,
        jobs.c.status.in_(("queued", "sent"))))
    return {worker.lower() for (worker,) in rows if worker}


def set_calldata(db, job_id: int, calldata: bytes) -> None:
    """A queued job's calldata brought up to date with the chain before it is sent (a settle's
    unsigned `before`, an openSettled's words)."""
    db.execute(update(jobs).where(jobs.c.id == job_id, jobs.c.status == "queued").values(calldata=calldata))


def sent_in(db, tx_hashes: Sequence[str]) -> list[Job]:
    """The jobs sent in any of these transactions (one nonce's transaction and its replacements)."""
    rows = db.execute(select(jobs).where(jobs.c.status == "sent", jobs.c.tx_hash.in_(list(tx_hashes)))
                      .order_by(jobs.c.id))
    return [_job(row) for row in rows]


def _ids(job_ids: int | Sequence[int]) -> list[int]:
    return [job_ids] if isinstance(job_ids, int) else list(job_ids)


def mark_sent(db, job_ids: int | Sequence[int], tx_hash: str) -> None:
    db.execute(update(jobs).where(jobs.c.id.in_(_ids(job_ids))).values(status="sent", tx_hash=tx_hash))


def mark_done(db, job_ids: int | Sequence[int], status: str, *, block_number: int | None = None,
              tx_hash: str | None = None, error: str | None = None) -> None:
    values = {"status": status, "block_number": block_number, "error": error[:300] if error else None}
    if tx_hash is not None:
        values["tx_hash"] = tx_hash
    db.execute(update(jobs).where(jobs.c.id.in_(_ids(job_ids))).values(**values))


def requeue(db, job_ids: int | Sequence[int]) -> None:
    """Back to the queue: no transaction of ours will ever carry them (dropped, refused)."""
    db.execute(update(jobs).where(jobs.c.id.in_(_ids(job_ids)), jobs.c.status == "sent")
               .values(status="queued", tx_hash=None))


def pending_count(db, chain_id: int) -> int:
    rows = db.execute(select(jobs.c.id).where(jobs.c.chain_id == chain_id, jobs.c.status.in_(("queued", "sent"))))
    return len(rows.all())
