"""GET /health (database and chain reachable) and GET /metrics (Prometheus text format)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text

from kempelen.relay.api.deps import StateDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health(state: StateDep) -> JSONResponse:
    """200 when the database and the chain answer; 503 naming what does not."""
    checks: dict[str, str] = {}
    try:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001  (report any failure, never raise from a probe)
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        checks["block_number"] = str(state.chain.w3.eth.block_number)
        checks["chain"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["chain"] = f"unavailable: {type(exc).__name__}"
    healthy = checks["database"] == "ok" and checks["chain"] == "ok"
    body = {"status": "ok" if healthy else "degraded", "chain_id": state.chain_id,
            "escrow": state.chain.deployment.escrow, **checks}
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(state: StateDep) -> PlainTextResponse:
    return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")
