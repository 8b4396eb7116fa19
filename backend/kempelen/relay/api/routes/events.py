"""GET /events: contract events as the indexer mirrored them, oldest first, paged by position."""

from __future__ import annotations

from fastapi import APIRouter, Query

from kempelen.relay import lifecycle
from kempelen.relay.api.deps import SessionDep, StateDep
from kempelen.relay.schemas import error_responses

router = APIRouter(prefix="/events", tags=["events"])


@router.get("", responses=error_responses(422))
def events(state: StateDep, db: SessionDep,
           batch_id: int | None = Query(None, ge=1, lt=2**63),
           name: str | None = Query(None, max_length=64, description="e.g. AnswersApproved"),
           after_block: int = Query(-1, ge=-1, lt=2**63),
           after_log: int = Query(-1, ge=-1, lt=2**31),
           limit: int = Query(100, ge=1, le=1000)) -> dict:
    """Page on with after_block/after_log of the last event you got."""
    rows = lifecycle.events(db, state.chain_id, batch_id=batch_id, name=name,
                            after=(after_block, after_log), limit=limit)
    return {"events": [{"name": e.name, "args": e.args, "address": e.address, "block_number": e.block_number,
                        "log_index": e.log_index, "transaction_hash": e.transaction_hash} for e in rows],
            "indexed_through_block": lifecycle.indexed_through(db, state.chain_id)}
