"""Batches: public status and listing; the requester's answers (JSONL), review state, createBatch tx."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from kempelen.errors import InvalidCID
from kempelen.protocol.cid import CID
from kempelen.relay import lifecycle, repository
from kempelen.relay.api.deps import BatchIdPath, CurrentAddress, SessionDep, StateDep
from kempelen.relay.batches import ZERO_ADDRESS
from kempelen.relay.errors import Forbidden, InvalidContent
from kempelen.relay.schemas import Address, Hex32, error_responses
from kempelen.relay.tasks import batch_or_404

router = APIRouter(prefix="/batches", tags=["batches"])

Uint128 = Field(pattern=r"^[0-9]{1,39}$", description="base units, decimal string")


@router.get("", responses=error_responses(422))
def list_batches(state: StateDep, db: SessionDep, requester: Address | None = None,
                 open_only: bool = Query(False, alias="open"),
                 before: int | None = Query(None, ge=1, lt=2**63, description="page: ids below this"),
                 limit: int = Query(50, ge=1, le=500)) -> dict:
    """Batches the indexer has seen, newest first."""
    rows = lifecycle.indexed_batches(db, state.chain_id, requester=requester,
                                     open_after=int(time.time()) if open_only else None,
                                     before_id=before, limit=limit)
    return {"batches": [{"batch_id": b.batch_id, "requester": b.requester, "token": b.token,
                         "task_count": b.task_count, "answers_per_task": b.answers_per_task,
                         "reward": str(b.reward), "deadline": b.deadline, "manifest_cid": b.manifest_cid,
                         "answers_submitted": b.answers_submitted} for b in rows],
            "indexed_through_block": lifecycle.indexed_through(db, state.chain_id)}


@router.get("/{batch_id}", responses=error_responses(404, 503))
def batch_status(batch_id: BatchIdPath, state: StateDep, db: SessionDep) -> dict:
    """The batch as the escrow stores it now, plus this relay's queue and the indexed review counts."""
    batch = state.catalog.get(batch_id, fresh=True)
    batch = batch or batch_or_404(state, batch_id)
    return {**batch.as_json(state.catalog.now()), "manifest_cid": state.catalog.manifest_cid(batch_id),
            "relay_answers": repository.batch_status_counts(db, state.chain_id, batch_id),
            "onchain_answers": lifecycle.onchain_status_counts(db, state.chain_id, batch_id)}


def _own_batch(state, batch_id: int, address: str):
    batch = batch_or_404(state, batch_id)
    if batch.requester != address:
        raise Forbidden(f"batch {batch_id} belongs to {batch.requester}, not to {address}")
    return batch


@router.get("/{batch_id}/answers", responses={**error_responses(401, 403, 404),
            200: {"content": {"application/x-ndjson": {}}, "description": "one answer per line"}})
def export_answers(batch_id: BatchIdPath, address: CurrentAddress, state: StateDep,
                   db: SessionDep) -> StreamingResponse:
    """Every answer of your batch, one JSON object per line, payload base64, with its status and
    the worker's signature (what a settlement manifest lists)."""
    _own_batch(state, batch_id, address)
    onchain = lifecycle.onchain_statuses(db, state.chain_id, batch_id)
    sessions, chain_id = state.sessions, state.chain_id

    def lines() -> Iterator[bytes]:
        after = 0
        while True:
            with sessions() as page_db:  # the request's session is closed once streaming starts
                rows = repository.batch_answers(page_db, chain_id, batch_id, after_id=after,
                                                limit=500, with_payload=True)
            for row in rows:
                indexed = onchain.get((row.worker, row.task_index))
                yield (json.dumps({
                    "receipt_id": row.receipt_id, "task_index": row.task_index, "worker": row.worker,
                    "payload_cid": row.payload_cid, "payload": base64.b64encode(row.payload).decode(),
                    "status": indexed.status if indexed and row.status == "onchain" else row.status,
                    "tx_hash": row.tx_hash, "answer_digest": "0x" + bytes(row.answer_digest).hex(),
                    "signature": "0x" + bytes(row.signature).hex()}) + "\n").encode()
            if len(rows) < 500:
                return
            after = rows[-1].id

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/{batch_id}/review", responses=error_responses(401, 403, 404))
def review_state(batch_id: BatchIdPath, address: CurrentAddress, state: StateDep, db: SessionDep) -> dict:
    """Your batch's answers by review status, and how long you have to review."""
    batch = _own_batch(state, batch_id, address)
    answers = lifecycle.onchain_statuses(db, state.chain_id, batch_id)
    now = int(time.time())
    pending = [{"worker": a.worker, "task_index": a.task_index, "answer_cid": a.answer_cid,
                "submitted_block": a.submitted_block} for a in answers.values() if a.status == "pending"]
    return {"batch_id": batch_id, "review_window": batch.review_window, "now": now,
            "counts": lifecycle.onchain_status_counts(db, state.chain_id, batch_id),
            "queued_at_relay": repository.batch_status_counts(db, state.chain_id, batch_id),
            "pending": pending[:1000]}


class BatchTerms(BaseModel):
    token: Address = ZERO_ADDRESS
    task_count: int = Field(ge=1, lt=2**32)
    answers_per_task: int = Field(1, ge=1, lt=256)
    reward: str = Uint128
    relay_fee: str = Uint128
    deadline: int = Field(ge=0, lt=2**40)
    review_window: int = Field(ge=0, lt=2**32)
    min_reputation: int = Field(0, ge=0, lt=2**32)
    gold_commitment: Hex32 = "0x" + "00" * 32
    manifest_cid: str = Field(max_length=128)


@router.post("/transaction", responses=error_responses(401, 422))
def create_batch_transaction(terms: BatchTerms, address: CurrentAddress, state: StateDep) -> dict:
    """The unsigned createBatch transaction (and the ERC-20 approve before it) for your wallet."""
    try:
        manifest = CID.parse(terms.manifest_cid).to_bytes()
    except InvalidCID as exc:
        raise InvalidContent(f"manifest_cid: {exc}", field="manifest_cid") from None
    reward, fee = int(terms.reward), int(terms.relay_fee)
    if reward >= 2**128 or fee >= 2**128:
        raise InvalidContent("reward and relay_fee must fit in uint128", field="reward")
    deposit = terms.task_count * terms.answers_per_task * (reward + fee)
    args = (terms.token, terms.task_count, terms.answers_per_task, reward, fee, terms.deadline,
            terms.review_window, terms.min_reputation, bytes.fromhex(terms.gold_commitment[2:]), manifest)
    escrow = state.chain.escrow
    native = terms.token.lower() == ZERO_ADDRESS
    create = {"from": address, "to": escrow.address, "chain_id": state.chain_id,
              "value": str(deposit if native else 0), "data": escrow.encode_abi("createBatch", args=[args])}
    body = {"deposit": str(deposit), "transactions": [create]}
    if not native:
        token = state.chain.token(terms.token)
        body["transactions"].insert(0, {
            "from": address, "to": token.address, "chain_id": state.chain_id, "value": "0",
            "data": token.encode_abi("approve", args=[escrow.address, deposit])})
    return body
