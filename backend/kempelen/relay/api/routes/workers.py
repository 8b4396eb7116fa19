"""A worker's own answers (signed in) and anyone's earnings (public, from the chain)."""

from __future__ import annotations

from eth_utils import to_checksum_address
from fastapi import APIRouter, Query

from kempelen.chain.contracts import ETH
from kempelen.relay import lifecycle, repository
from kempelen.relay.api.deps import CurrentAddress, SessionDep, StateDep
from kempelen.relay.errors import ChainUnavailable
from kempelen.relay.intake import receipt_of
from kempelen.relay.schemas import Address, error_responses

router = APIRouter(prefix="/workers", tags=["workers"])


@router.get("/me/answers", responses=error_responses(401))
def my_answers(worker: CurrentAddress, state: StateDep, db: SessionDep,
               after: int = Query(0, ge=0, lt=2**63, description="page: queue ids above this"),
               limit: int = Query(100, ge=1, le=1000)) -> dict:
    rows = repository.worker_answers(db, state.chain_id, worker, after_id=after, limit=limit)
    return {"answers": [{**receipt_of(r), **lifecycle.receipt_status(db, r)} for r in rows],
            "next": rows[-1].id if len(rows) == limit else None}


@router.get("/{address}/earnings", responses=error_responses(422, 503))
def earnings(address: Address, state: StateDep, db: SessionDep) -> dict:
    """Withdrawable balance per token (the escrow, now) and lifetime credited/withdrawn (indexer)."""
    account = to_checksum_address(address)
    tokens = {"ETH": ETH, **state.chain.deployment.tokens}
    try:
        withdrawable = {symbol: str(state.chain.escrow.functions.balanceOf(token, account).call())
                        for symbol, token in tokens.items()}
    except Exception as exc:  # noqa: BLE001  (any RPC failure means "ask later")
        raise ChainUnavailable(f"cannot read balances from the chain ({type(exc).__name__})") from None
    history = [{"token": b.token, "credited": str(b.credited), "withdrawn": str(b.withdrawn)}
               for b in lifecycle.balances(db, state.chain_id, account)]
    return {"address": account, "withdrawable": withdrawable, "history": history}
