"""Leases: a worker holds a slot of a task for the batch's assignment duration."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from kempelen.relay import repository, tasks
from kempelen.relay.api.deps import BatchIdPath, CurrentAddress, SessionDep, StateDep, TaskIndexPath
from kempelen.relay.errors import NotFound
from kempelen.relay.models import utcnow
from kempelen.relay.schemas import error_responses

router = APIRouter(prefix="/leases", tags=["leases"])


class LeaseRequest(BaseModel):
    batch_id: int = Field(ge=1, lt=2**63)
    task_index: int = Field(ge=0, lt=2**32)


class Lease(BaseModel):
    batch_id: int
    task_index: int
    worker: str
    expires_at: str


def _out(lease) -> Lease:
    return Lease(batch_id=lease.batch_id, task_index=lease.task_index, worker=lease.worker,
                 expires_at=lease.expires_at.isoformat())


@router.post("", status_code=201, response_model=Lease,
             responses=error_responses(401, 403, 404, 409, 410, 503))
def take_lease(body: LeaseRequest, worker: CurrentAddress, state: StateDep, db: SessionDep) -> Lease:
    """Hold a slot (renews your lease if you have one). 409 when every slot is answered or leased."""
    return _out(tasks.lease(db, state, worker, body.batch_id, body.task_index))


@router.get("", response_model=list[Lease], responses=error_responses(401))
def my_leases(worker: CurrentAddress, db: SessionDep) -> list[Lease]:
    return [_out(lease) for lease in repository.worker_leases(db, worker, utcnow())]


@router.delete("/{batch_id}/{task_index}", status_code=204, responses=error_responses(401, 404))
def release_lease(batch_id: BatchIdPath, task_index: TaskIndexPath, worker: CurrentAddress,
                  db: SessionDep) -> None:
    """Give the slot back before the lease runs out."""
    if not repository.delete_lease(db, batch_id, task_index, worker):
        raise NotFound(f"you hold no lease on task {task_index} of batch {batch_id}")
