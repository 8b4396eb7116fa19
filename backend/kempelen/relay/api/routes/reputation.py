"""GET /reputation/{address}: review outcomes of any address, as worker and as requester (on-chain)."""

from __future__ import annotations

from eth_utils import to_checksum_address
from fastapi import APIRouter

from kempelen.relay.api.deps import StateDep
from kempelen.relay.errors import ChainUnavailable
from kempelen.relay.schemas import Address, error_responses

router = APIRouter(prefix="/reputation", tags=["reputation"])


def _record(values) -> dict:
    approved, rejected, released = values
    return {"approved": approved, "rejected": rejected, "released": released}


@router.get("/{address}", responses=error_responses(422, 503))
def reputation(address: Address, state: StateDep) -> dict:
    account = to_checksum_address(address)
    contract = state.chain.reputation.functions
    try:
        return {"address": account, "score": contract.score(account).call(),
                "as_worker": _record(contract.workerRecord(account).call()),
                "as_requester": _record(contract.requesterRecord(account).call())}
    except Exception as exc:  # noqa: BLE001  (any RPC failure means "ask later")
        raise ChainUnavailable(f"cannot read reputation from the chain ({type(exc).__name__})") from None
