"""Tasks for workers: the open ones you qualify for, a task's payload CID, the payload itself."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Query
from fastapi.responses import Response

from kempelen.ipfs.errors import ContentError
from kempelen.relay import tasks
from kempelen.relay.api.deps import BatchIdPath, CurrentAddress, SessionDep, StateDep, TaskIndexPath
from kempelen.relay.errors import NotFound
from kempelen.relay.schemas import error_responses

router = APIRouter(prefix="/tasks", tags=["tasks"])


@router.get("/open", responses=error_responses(401, 503))
def open_tasks(worker: CurrentAddress, state: StateDep, db: SessionDep,
               batch_id: int | None = Query(None, ge=1, lt=2**63),
               limit: int = Query(50, ge=1, le=500)) -> dict:
    """Tasks of open batches that you qualify for (reputation, not blocked) with slots left."""
    found = tasks.open_tasks(db, state, worker, batch_id=batch_id, limit=limit)
    return {"tasks": [asdict(task) for task in found]}


@router.get("/{batch_id}/{task_index}", responses=error_responses(404, 503))
def task(batch_id: BatchIdPath, task_index: TaskIndexPath, state: StateDep) -> dict:
    """Where a task's payload is, and how long a lease on it lasts."""
    cid = tasks.payload_cid(state, batch_id, task_index)
    manifest = tasks.manifest_of(state, batch_id)
    return {"batch_id": batch_id, "task_index": task_index, "payload_cid": cid,
            "assignment_seconds": manifest.assignment_seconds, "instructions": manifest.instructions}


@router.get("/{batch_id}/{task_index}/payload", response_class=Response,
            responses={**error_responses(404, 503), 200: {"content": {"application/octet-stream": {}}}})
def task_payload(batch_id: BatchIdPath, task_index: TaskIndexPath, state: StateDep) -> Response:
    """The task's payload bytes (verified against its CID as they are read)."""
    cid = tasks.payload_cid(state, batch_id, task_index)
    try:
        content = state.store.get(cid)
    except ContentError:
        raise NotFound(f"payload {cid} of task {task_index} is not stored at this relay") from None
    return Response(content, media_type="application/octet-stream", headers={"X-Ipfs-Roots": cid})
