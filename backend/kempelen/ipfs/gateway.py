"""A read-only IPFS HTTP gateway over the content store: `GET|HEAD /ipfs/{cid}`.

Serves the three responses the IPFS gateway specs define for an immutable CID:
the file's bytes (trusted: the gateway verified them), and the two verifiable
ones of the Trustless Gateway spec — a single block (`application/vnd.ipld.raw`)
or a CARv1 of the whole DAG (`application/vnd.ipld.car`), which a client checks
against the CID itself without trusting us.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse

from kempelen.errors import InvalidCID
from kempelen.ipfs.car import CAR_CONTENT_TYPE, car_chunks
from kempelen.ipfs.errors import BlockNotFound, ContentError, CorruptBlock, NotAFile
from kempelen.ipfs.store import ContentStore
from kempelen.protocol.cid import CID

RAW_TYPE = "application/vnd.ipld.raw"
CAR_TYPE = "application/vnd.ipld.car"
IMMUTABLE = "public, max-age=29030400, immutable"


def _requested_format(request: Request) -> str | None:
    """'raw', 'car' or None (the file itself), from ?format= first, then Accept."""
    fmt = request.query_params.get("format")
    if fmt is not None:
        if fmt not in ("raw", "car"):
            raise _BadRequest(f"unsupported format {fmt!r}: use raw or car")
        return fmt
    for item in request.headers.get("accept", "").split(","):
        media = item.split(";", 1)[0].strip().lower()
        if media == RAW_TYPE:
            return "raw"
        if media == CAR_TYPE:
            return "car"
    return None


class _BadRequest(Exception):
    pass


def _common_headers(cid_text: str, cid: CID) -> dict[str, str]:
    return {
        "Cache-Control": IMMUTABLE,
        "X-Ipfs-Path": f"/ipfs/{cid_text}",
        "X-Ipfs-Roots": str(cid),
        "Vary": "Accept",
    }


def gateway_router(store: ContentStore) -> APIRouter:
    """An APIRouter serving `/ipfs/{cid}` from `store`; mount it on any FastAPI app."""
    router = APIRouter(tags=["ipfs"])

    def get_content(cid_text: str, request: Request) -> Response:
        try:
            cid = CID.parse(cid_text)
            fmt = _requested_format(request)
        except (InvalidCID, _BadRequest) as exc:
            return PlainTextResponse(str(exc), status_code=400)
        head = request.method == "HEAD"
        headers = _common_headers(cid_text, cid)
        try:
            if fmt == "raw":
                return _raw_block(store, cid, headers, request, head)
            if fmt == "car":
                return _car(store, cid, headers, request, head)
            return _file(store, cid, headers, request, head)
        except BlockNotFound:
            return PlainTextResponse(f"{cid} not found", status_code=404)
        except NotAFile as exc:
            return PlainTextResponse(str(exc), status_code=501)
        except CorruptBlock:
            return PlainTextResponse(f"stored content for {cid} failed verification", 500)
        except ContentError as exc:
            return PlainTextResponse(f"cannot serve {cid}: {exc}", status_code=500)

    # One operation per method: OpenAPI operation ids must be unique.
    for method in ("GET", "HEAD"):
        router.add_api_route("/ipfs/{cid_text}", get_content, methods=[method], response_model=None,
                             operation_id=f"{method.lower()}_ipfs_content")
    return router


def _not_modified(request: Request, etag: str, headers: dict[str, str]) -> Response | None:
    if etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers={**headers, "ETag": etag})
    return None


def _raw_block(
    store: ContentStore, cid: CID, headers: dict[str, str], request: Request, head: bool
) -> Response:
    etag = f'"{cid}.raw"'
    if cached := _not_modified(request, etag, headers):
        return cached
    block = store.get_block(cid)
    headers.update(
        {
            "ETag": etag,
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'attachment; filename="{cid}.bin"',
        }
    )
    if head:
        headers["Content-Length"] = str(len(block))
        return Response(status_code=200, media_type=RAW_TYPE, headers=headers)
    return Response(block, media_type=RAW_TYPE, headers=headers)


def _car(
    store: ContentStore, cid: CID, headers: dict[str, str], request: Request, head: bool
) -> Response:
    # Weak: the bytes are deterministic here, but CAR block order is a server choice.
    etag = f'W/"{cid}.car"'
    if cached := _not_modified(request, etag, headers):
        return cached
    blocks = store.walk(cid)
    first = next(blocks)  # fail with 404/500 before the 200 status is sent
    headers.update(
        {
            "ETag": etag,
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": f'attachment; filename="{cid}.car"',
            "Accept-Ranges": "none",
        }
    )
    if head:
        return Response(status_code=200, media_type=CAR_CONTENT_TYPE, headers=headers)
    stream = car_chunks([cid], _first_then_block(first, blocks))
    return StreamingResponse(stream, media_type=CAR_CONTENT_TYPE, headers=headers)


def _first_then_block(
    first: tuple[CID, bytes], rest: Iterator[tuple[CID, bytes]]
) -> Iterator[tuple[CID, bytes]]:
    yield first
    yield from rest


def _file(
    store: ContentStore, cid: CID, headers: dict[str, str], request: Request, head: bool
) -> Response:
    etag = f'"{cid}"'
    if cached := _not_modified(request, etag, headers):
        return cached
    size = store.size(cid)  # reads and verifies the root block: 404/501 surface here
    headers.update({"ETag": etag, "Content-Length": str(size)})
    if head:
        return Response(status_code=200, media_type="application/octet-stream", headers=headers)
    return StreamingResponse(
        store.iter_file(cid), media_type="application/octet-stream", headers=headers
    )
