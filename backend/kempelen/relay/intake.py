"""The answer path: verify a signed answer, check it against its batch, commit it, then acknowledge.

`verify_answer` is pure (signature, digest, size). `AnswerWriter` is the per-process group
commit: request handlers enqueue verified answers and await a future; one writer thread
inserts everything queued so far in one transaction, commits, and only then resolves the
futures — so a 202 always means the answer and its payload are in the database, and one
fsync is shared by every request that arrived during the previous commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache

from eth_utils import to_checksum_address
from sqlalchemy import Engine

from kempelen.ipfs.store import ContentStore
from kempelen.protocol.cid import raw_cid
from kempelen.protocol.signing import Answer, Domain, SignatureError, answer_digest, recover
from kempelen.relay import repository
from kempelen.relay.batches import BatchCatalog, BatchInfo
from kempelen.relay.errors import (
    BadSignature,
    BatchClosed,
    DigestMismatch,
    DuplicateAnswer,
    PayloadTooLarge,
    RelayError,
    SignerMismatch,
    UnknownBatch,
    UnknownTask,
)
from kempelen.relay.models import utcnow
from kempelen.relay.ratelimit import RateLimiter
from kempelen.relay.settlement import SettlementModes

log = logging.getLogger(__name__)

# EIP-55 checksumming costs two keccaks in pure Python; workers post many answers each.
_checksum = lru_cache(maxsize=65_536)(to_checksum_address)


class StorageUnavailable(RelayError):
    status_code = 503
    code = "storage_unavailable"


@dataclass(frozen=True)
class VerifiedAnswer:
    """An answer whose signature recovers to its worker; ready to be stored."""

    receipt_id: str
    chain_id: int
    batch_id: int
    task_index: int
    worker: str
    answer_digest: bytes
    signature: bytes
    payload: bytes
    payload_cid: str
    hold_until: int | None = None  # settlement mode: stored "held" until then (relay/settlement.py)

    @property
    def key(self) -> tuple[int, int, str, int]:
        return (self.chain_id, self.batch_id, self.worker, self.task_index)

    def row(self, accepted_at: datetime) -> dict:
        return {
            "receipt_id": self.receipt_id, "chain_id": self.chain_id, "batch_id": self.batch_id,
            "task_index": self.task_index, "worker": self.worker,
            "answer_digest": self.answer_digest, "signature": self.signature,
            "payload": self.payload, "payload_cid": self.payload_cid,
            "status": "accepted" if self.hold_until is None else "held",
            "accepted_at": accepted_at, "hold_until": self.hold_until,  # one key set per group insert
        }


def _full_signature(signature: bytes) -> bytes:
    """65-byte r || s || v, also from the EIP-2098 64-byte form (the queue stores one form)."""
    if len(signature) != 64:
        return signature
    vs = int.from_bytes(signature[32:], "big")
    return signature[:32] + (vs & ((1 << 255) - 1)).to_bytes(32, "big") + bytes([27 + (vs >> 255)])


def verify_answer(domain: Domain, batch_id: int, task_index: int, worker: str, payload: bytes,
                  signature: bytes, claimed_digest: bytes | None, max_payload_bytes: int) -> VerifiedAnswer:
    """Check size, digest and signature; raise the specific RelayError for each failure."""
    if len(payload) > max_payload_bytes:
        raise PayloadTooLarge(f"payload is {len(payload)} bytes; the limit is {max_payload_bytes}",
                              limit=max_payload_bytes)
    digest = answer_digest(payload)
    if claimed_digest is not None and claimed_digest != digest:
        raise DigestMismatch(f"answer_digest 0x{claimed_digest.hex()} is not the sha2-256 of the "
                             f"payload (0x{digest.hex()})", field="answer_digest")
    worker = _checksum(worker)
    signed = domain.digest(Answer(batch_id, task_index, digest, worker).struct_hash())
    try:
        signer = recover(signed, signature)
    except SignatureError as exc:
        raise BadSignature(f"bad signature: {exc}", field="signature") from None
    if signer != worker:
        raise SignerMismatch(f"signature mismatch: the answer was signed by {signer}, not by the "
                             f"worker {worker} (or signed over other fields or another chain/escrow)",
                             recovered=signer, worker=worker)
    return VerifiedAnswer("0x" + signed.hex(), domain.chain_id, batch_id, task_index, worker, digest,
                          _full_signature(signature), payload, str(raw_cid(digest)))


@dataclass(frozen=True)
class Outcome:
    receipt: dict
    duplicate: bool


class AnswerWriter:
    """Group commit of answers: one writer thread per process, one transaction per group."""

    def __init__(self, engine: Engine, pinner: AnswerPinner | None, *, window_ms: float = 2.0,
                 max_answers: int = 256) -> None:
        self.engine = engine
        self.pinner = pinner
        self.window = window_ms / 1000
        self.max_answers = max_answers
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._writers_lock = _sqlite_writers_lock(engine)
        self.groups = 0  # commits so far (metrics)
        self.committed = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="kempelen-answer-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    async def submit(self, answer: VerifiedAnswer) -> Outcome:
        if self._thread is None:
            raise StorageUnavailable("the relay is shutting down; retry")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put((answer, loop, future))
        return await future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            group = [first]
            deadline = time.monotonic() + self.window
            while len(group) < self.max_answers:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this group, then stop
                    break
                group.append(item)
            self._commit(group)

    def _commit(self, group: list) -> None:
        answers = [answer for answer, _, _ in group]
        try:
            with self._writers_lock, self.engine.begin() as connection:
                outcomes = store_answers(connection, answers, utcnow())
        except Exception as exc:  # the database is down or full: nothing was acknowledged
            log.exception("answer group of %d not stored", len(group))
            failure = StorageUnavailable(f"answer not stored ({type(exc).__name__}); retry")
            _resolve(group, [failure] * len(group))
            return
        self.groups += 1
        self.committed += sum(not outcome.duplicate for outcome in outcomes)
        _resolve(group, outcomes)
        if self.pinner is not None:
            self.pinner.pin([a.payload for a, o in zip(answers, outcomes) if not o.duplicate])


class AnswerPinner:
    """Copies committed answer payloads into the content store, off the request path.

    The database row is the durable copy (it is what the 202 promises); the store is how
    /ipfs/{cid} serves it. A file per answer costs more than the whole group commit on
    slow disks, so a thread of its own does it; `repin` catches up after a crash.
    """

    def __init__(self, store: ContentStore) -> None:
        self.store = store
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="kempelen-answer-pinner", daemon=True)
        self._thread.start()

    def pin(self, payloads: list[bytes]) -> None:
        if payloads:
            self._queue.put(payloads)

    def stop(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=60)

    def repin(self, engine: Engine) -> int:
        """Pin queued answers whose block is missing (written before a crash); return how many."""
        missing: list[bytes] = []
        count = 0
        with engine.connect() as connection:
            for cid, payload in repository.unsubmitted_payloads(connection):
                if not self.store.has(cid):
                    missing.append(payload)
                    count += 1
                if len(missing) >= 1000:
                    self.pin(missing)
                    missing = []
        self.pin(missing)
        return count

    def _run(self) -> None:
        while (payloads := self._queue.get()) is not None:
            for payload in payloads:
                try:
                    self.store.put_block(payload)
                except Exception:  # a full disk must not stop intake; the row keeps the bytes
                    log.exception("could not pin an answer payload")


class _FileLock:
    """An exclusive flock: a waiting process wakes the moment the holder releases."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc_info) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


def _sqlite_writers_lock(engine: Engine):
    """Relay processes sharing one SQLite file take turns through a lock file.

    SQLite's own busy handler polls with sleeps of up to 100 ms while another process holds
    the write lock; queuing on flock instead hands the lock over at once, which keeps p99
    latency of two intake processes close to their median. PostgreSQL needs no such thing.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        return contextlib.nullcontext()
    return _FileLock(database + ".intake-lock")


def store_answers(connection, answers: list[VerifiedAnswer], accepted_at: datetime) -> list[Outcome]:
    """Insert the group, then look up the original of every answer that was a duplicate."""
    first_of_key: dict[tuple, VerifiedAnswer] = {}
    for answer in answers:
        first_of_key.setdefault(answer.key, answer)
    inserted = repository.insert_answers(connection, [a.row(accepted_at) for a in first_of_key.values()])
    fresh = {receipt_id for receipt_id in inserted}
    duplicates = [a for a in answers if a.receipt_id not in fresh or first_of_key[a.key] is not a]
    originals = repository.answers_by_keys(connection, {a.key for a in duplicates})
    outcomes = []
    for answer in answers:
        if first_of_key[answer.key] is answer and answer.receipt_id in fresh:
            outcomes.append(Outcome(receipt_of(answer.row(accepted_at)), duplicate=False))
        else:
            outcomes.append(Outcome(receipt_of(originals[answer.key]), duplicate=True))
    return outcomes


def receipt_of(row) -> dict:
    """The receipt a client gets (202 body, 409 body, GET /receipts)."""
    get = row.get if isinstance(row, dict) else row._mapping.get
    return {
        "receipt_id": get("receipt_id"), "status": get("status"), "batch_id": get("batch_id"),
        "task_index": get("task_index"), "worker": get("worker"),
        "answer_digest": "0x" + bytes(get("answer_digest")).hex(), "payload_cid": get("payload_cid"),
        "accepted_at": get("accepted_at").isoformat(),
    }


def _resolve(group: list, results: list) -> None:
    by_loop: dict = {}
    for (_, loop, future), result in zip(group, results):
        by_loop.setdefault(loop, []).append((future, result))
    for loop, pairs in by_loop.items():
        loop.call_soon_threadsafe(_set_results, pairs)


def _set_results(pairs: list) -> None:
    for future, result in pairs:
        if future.done():  # the client went away; the answer is stored all the same
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class Intake:
    """The whole answer path for one process: limits, verification, batch checks, group commit."""

    def __init__(self, domain: Domain, catalog: BatchCatalog, writer: AnswerWriter,
                 limiter: RateLimiter, max_payload_bytes: int,
                 settlement_modes: SettlementModes | None = None) -> None:
        self.domain = domain
        self.catalog = catalog
        self.writer = writer
        self.limiter = limiter
        self.max_payload_bytes = max_payload_bytes
        self.settlement_modes = settlement_modes

    async def accept(self, batch_id: int, task_index: int, worker: str, payload: bytes,
                     signature: bytes, claimed_digest: bytes | None) -> dict:
        """Store the answer and return its receipt; raise DuplicateAnswer with the original."""
        answer = verify_answer(self.domain, batch_id, task_index, worker, payload, signature,
                               claimed_digest, self.max_payload_bytes)
        self.limiter.take(answer.worker)
        batch = await self.check_task(batch_id, task_index)
        if self.settlement_modes is not None:
            hold_until = await self.settlement_modes.hold_until(batch)
            if hold_until is not None:
                answer = replace(answer, hold_until=hold_until)
        outcome = await self.writer.submit(answer)
        if outcome.duplicate:
            raise DuplicateAnswer(f"{answer.worker} already answered task {task_index} of batch "
                                  f"{batch_id}; this is the original receipt", receipt=outcome.receipt)
        return outcome.receipt

    async def check_task(self, batch_id: int, task_index: int) -> BatchInfo:
        batch = self.catalog.known(batch_id) or await self.catalog.aget(batch_id)
        if batch is None:
            raise UnknownBatch(f"no batch {batch_id} in escrow {self.domain.escrow}", batch_id=batch_id)
        if task_index >= batch.task_count:
            raise UnknownTask(f"batch {batch_id} has tasks 0..{batch.task_count - 1}; no task {task_index}",
                              batch_id=batch_id, task_index=task_index)
        if not batch.is_open(self.catalog.now()):
            batch = await self.catalog.aget(batch_id, fresh=True)  # an extension may have moved it
            if batch is not None and not batch.is_open(self.catalog.now()):
                raise BatchClosed(f"batch {batch_id} stopped taking answers at its deadline "
                                  f"({batch.deadline}); the escrow would skip this answer")
        return batch
