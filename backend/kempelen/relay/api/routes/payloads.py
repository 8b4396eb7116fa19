"""Uploads by signed-in requesters: task payloads, batch manifests, rejection reasons -> their CIDs."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from kempelen.protocol.manifest import BatchManifest, ManifestError
from kempelen.protocol.settlement import SettlementManifest
from kempelen.relay import repository
from kempelen.relay.api.deps import CurrentAddress, SessionDep, StateDep
from kempelen.relay.errors import InvalidContent, PayloadTooLarge
from kempelen.relay.models import utcnow
from kempelen.relay.schemas import error_responses

router = APIRouter(prefix="/payloads", tags=["payloads"])


class Kind(StrEnum):
    task = "task"
    manifest = "manifest"
    reason = "reason"
    settlement = "settlement"


class Upload(BaseModel):
    cid: str
    size: int
    kind: Kind


_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"}}}}}


@router.post("", status_code=201, response_model=Upload, openapi_extra=_BODY,
             responses=error_responses(401, 413, 422))
async def upload(request: Request, uploader: CurrentAddress, state: StateDep, db: SessionDep,
                 kind: Annotated[Kind, Query(description="what the bytes are")]) -> Upload:
    """Pin the request body in the relay's store (CID as `ipfs add` gives) and record who sent it.

    A manifest must parse as a Kempelen batch manifest (format kempelen/batch-manifest/1), a
    settlement as a settlement manifest (kempelen/settlement-manifest/1).
    """
    content = await request.body()
    if len(content) > state.settings.max_upload_bytes:
        raise PayloadTooLarge(f"upload is {len(content)} bytes; the limit is {state.settings.max_upload_bytes}")
    if kind is Kind.manifest:
        try:
            BatchManifest.from_json(content)
        except ManifestError as exc:
            raise InvalidContent(f"not a batch manifest: {exc}", field="body") from None
    if kind is Kind.settlement:
        try:
            SettlementManifest.from_json(content)
        except ManifestError as exc:
            raise InvalidContent(f"not a settlement manifest: {exc}", field="body") from None
    cid = str(await run_in_threadpool(state.store.put, content))
    await run_in_threadpool(repository.record_upload, db, cid, uploader, len(content), kind.value, utcnow())
    return Upload(cid=cid, size=len(content), kind=kind)


@router.get("", response_model=list[Upload], responses=error_responses(401))
def my_uploads(uploader: CurrentAddress, db: SessionDep,
               limit: int = Query(100, ge=1, le=1000)) -> list[Upload]:
    return [Upload(cid=u.cid, size=u.size, kind=u.kind) for u in repository.uploads_of(db, uploader, limit=limit)]
