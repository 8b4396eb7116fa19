"""GET /receipts/{id}: where an acknowledged answer is in its life, up to paid."""

from __future__ import annotations

from fastapi import APIRouter, Path

from kempelen.relay import lifecycle, repository
from kempelen.relay.api.deps import SessionDep
from kempelen.relay.errors import NotFound
from kempelen.relay.intake import receipt_of
from kempelen.relay.schemas import error_responses

router = APIRouter(prefix="/receipts", tags=["receipts"])


@router.get("/{receipt_id}", responses=error_responses(404))
def receipt(db: SessionDep, receipt_id: str = Path(pattern=r"^0x[0-9a-fA-F]{64}$")) -> dict:
    """accepted -> submitted (tx_hash) -> onchain (block_number) -> approved | rejected | released -> paid;
    or skipped (skip_reason) if the escrow refused it; in settlement-mode batches held -> settled, or
    held -> accepted at the fallback. A SettlementSealed skip is not final: the answer is held again
    until its worker's settled words are opened (docs/relay.md)."""
    row = repository.answer_by_receipt(db, receipt_id.lower())
    if row is None:
        raise NotFound(f"no receipt {receipt_id} at this relay")
    return {**receipt_of(row), **lifecycle.receipt_status(db, row)}
