"""Tasks as workers see them: payload CIDs from the batch manifest, who qualifies, slots left, leases.

Leases are advisory: they keep the open-task list from sending more workers to a task than it
has slots, but the escrow decides (answers beyond answersPerTask are skipped as TaskFull).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from kempelen.errors import InvalidCID
from kempelen.ipfs.errors import ContentError
from kempelen.protocol.manifest import BatchManifest, ManifestError
from kempelen.relay import lifecycle, repository
from kempelen.relay.batches import BatchInfo
from kempelen.relay.errors import (
    BatchClosed,
    ChainUnavailable,
    Conflict,
    Forbidden,
    NotFound,
    UnknownBatch,
    UnknownTask,
)
from kempelen.relay.repository import Db
from kempelen.relay.state import RelayState


@dataclass(frozen=True)
class OpenTask:
    batch_id: int
    task_index: int
    payload_cid: str | None
    reward: str
    token: str
    deadline: int
    slots_left: int


def batch_or_404(state: RelayState, batch_id: int) -> BatchInfo:
    batch = state.catalog.get(batch_id)
    if batch is None:
        raise UnknownBatch(f"no batch {batch_id} in escrow {state.chain.deployment.escrow}", batch_id=batch_id)
    return batch


def task_or_404(state: RelayState, batch_id: int, task_index: int) -> BatchInfo:
    batch = batch_or_404(state, batch_id)
    if task_index >= batch.task_count:
        raise UnknownTask(f"batch {batch_id} has tasks 0..{batch.task_count - 1}; no task {task_index}",
                          batch_id=batch_id, task_index=task_index)
    return batch


# Parsed manifests by CID: content-addressed, so an entry never goes stale.
_manifests: dict[str, BatchManifest] = {}
_MAX_MANIFESTS = 1024


def manifest_of(state: RelayState, batch_id: int) -> BatchManifest:
    """The batch's manifest, if its requester pinned it here (or it reached our store otherwise)."""
    cid = state.catalog.manifest_cid(batch_id)
    if cid is None:
        raise NotFound(f"batch {batch_id} names no readable manifest CID")
    if cid not in _manifests:
        if len(_manifests) >= _MAX_MANIFESTS:
            _manifests.clear()
        try:
            _manifests[cid] = BatchManifest.from_json(state.store.get(cid))
        except ContentError:
            raise NotFound(f"manifest {cid} of batch {batch_id} is not stored at this relay") from None
        except (ManifestError, InvalidCID) as exc:
            raise NotFound(f"manifest {cid} of batch {batch_id} is not a valid manifest: {exc}") from None
    return _manifests[cid]


def payload_cid(state: RelayState, batch_id: int, task_index: int) -> str:
    task_or_404(state, batch_id, task_index)
    manifest = manifest_of(state, batch_id)
    if task_index >= manifest.task_count:
        raise UnknownTask(f"the manifest of batch {batch_id} lists {manifest.task_count} tasks")
    return manifest.task_cids[task_index]


def qualifies(state: RelayState, batch: BatchInfo, worker: str) -> str | None:
    """Why `worker` may not answer `batch` (blocked, reputation), or None if it may."""
    try:
        if state.chain.escrow.functions.isBlocked(batch.requester, worker).call():
            return f"requester {batch.requester} blocked {worker}"
        if batch.min_reputation and not state.chain.reputation.functions.meets(
                worker, batch.min_reputation).call():
            return f"batch {batch.batch_id} needs reputation {batch.min_reputation}"
    except Exception as exc:  # noqa: BLE001  (any RPC failure means "ask later")
        raise ChainUnavailable(f"cannot read qualification from the chain ({type(exc).__name__})") from None
    return None


def _taken(db: Db, state: RelayState, batch_id: int, now: datetime, worker: str) -> tuple[dict, set]:
    """Slots taken per task (answers here or on-chain, others' live leases), tasks `worker` answered."""
    answerers = lifecycle.onchain_answerers(db, state.chain_id, batch_id)
    for task_index, workers in repository.task_answerers(db, state.chain_id, batch_id).items():
        answerers[task_index] = answerers.get(task_index, set()) | workers  # queued or on-chain
    mine = {t for t, workers in answerers.items() if worker in workers}
    taken = {t: len(w) for t, w in answerers.items()}
    # A lease whose holder has since answered is that answer's slot, not a second one.
    for task_index, lessees in repository.active_lessees(db, batch_id, now, excluding=worker).items():
        taken[task_index] = taken.get(task_index, 0) + len(lessees - answerers.get(task_index, set()))
    return taken, mine


def open_tasks(db: Db, state: RelayState, worker: str, *, batch_id: int | None, limit: int) -> list[OpenTask]:
    now = datetime.fromtimestamp(time.time()).astimezone()
    batch_ids = [batch_id] if batch_id is not None else [
        b.batch_id for b in lifecycle.indexed_batches(db, state.chain_id, requester=None,
                                                      open_after=int(state.catalog.now()), before_id=None,
                                                      limit=50)]
    found: list[OpenTask] = []
    for bid in batch_ids:
        batch = state.catalog.get(bid)
        if batch is None or not batch.is_open(state.catalog.now()) or qualifies(state, batch, worker):
            continue
        taken, mine = _taken(db, state, bid, now, worker)
        try:
            cids = manifest_of(state, bid).task_cids
        except NotFound:
            cids = ()
        for task_index in range(batch.task_count):
            left = batch.answers_per_task - taken.get(task_index, 0)
            if left <= 0 or task_index in mine:
                continue
            found.append(OpenTask(bid, task_index, cids[task_index] if task_index < len(cids) else None,
                                  str(batch.reward), batch.token, batch.deadline, left))
            if len(found) >= limit:
                return found
    return found


def lease(db: Db, state: RelayState, worker: str, batch_id: int, task_index: int):
    """Take (or renew) a slot on a task for the manifest's assignment duration."""
    batch = task_or_404(state, batch_id, task_index)
    if not batch.is_open(state.catalog.now()):
        raise BatchClosed(f"batch {batch_id} is past its deadline")
    refusal = qualifies(state, batch, worker)
    if refusal:
        raise Forbidden(f"cannot lease: {refusal}")
    now = datetime.now().astimezone()
    taken, mine = _taken(db, state, batch_id, now, worker)
    if task_index in mine:
        raise Conflict(f"{worker} already answered task {task_index} of batch {batch_id}")
    if taken.get(task_index, 0) >= batch.answers_per_task:
        raise Conflict(f"task {task_index} of batch {batch_id} has no slot left "
                       f"({batch.answers_per_task} answers per task, all taken or leased)")
    try:
        seconds = manifest_of(state, batch_id).assignment_seconds
    except NotFound:
        seconds = state.settings.lease_seconds
    expires = min(now + timedelta(seconds=seconds),
                  datetime.fromtimestamp(batch.deadline).astimezone())
    return repository.put_lease(db, batch_id, task_index, worker, expires)
