"""POST /answers: a worker's signed answer with its payload; 202 only once both are committed.

The route documents the endpoint in the OpenAPI schema; at run time `AnswerFastPath` (below,
installed by create_app) serves the same request through the same `answer_response` without
FastAPI's router and dependency injection, which cost as much CPU as the answer itself.
"""

from __future__ import annotations

import base64
import binascii
import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.types import ASGIApp, Receive, Scope, Send

from kempelen.relay.errors import RelayError
from kempelen.relay.schemas import Address, Hex32, Receipt, error_responses
from kempelen.relay.state import RelayState

router = APIRouter(prefix="/answers", tags=["answers"])


class AnswerPost(BaseModel):
    """An Answer{batchId, taskIndex, answerDigest, worker} signed under the escrow's EIP-712 domain."""

    model_config = ConfigDict(extra="forbid")

    batch_id: int = Field(ge=1, lt=2**63)
    task_index: int = Field(ge=0, lt=2**32)
    worker: Address
    payload: str = Field(description="the answer bytes, base64 (at most 256 KiB decoded)")
    signature: str = Field(pattern=r"^0x([0-9a-fA-F]{128}|[0-9a-fA-F]{130})$",
                           description="65-byte r||s||v or 64-byte EIP-2098 compact, 0x hex")
    answer_digest: Hex32 | None = Field(
        default=None, description="sha2-256 of the payload; optional, checked when given")

    @field_validator("payload")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("payload must be standard base64") from None
        return value


def _schema_errors(exc: ValidationError) -> dict:
    """FastAPI's 422 body: each error's loc starts with "body" and names the field."""
    return {"detail": [{"type": e["type"], "loc": ["body", *e["loc"]], "msg": e["msg"],
                        "input": e.get("input") if isinstance(e.get("input"), (str, int, float, type(None)))
                        else None} for e in exc.errors(include_url=False)]}


async def answer_response(state: RelayState, body: bytes) -> tuple[int, dict, dict | None]:
    """(status, JSON body, extra headers) for a POST /answers body."""
    try:
        answer = AnswerPost.model_validate_json(body)
    except ValidationError as exc:
        return 422, _schema_errors(exc), None
    try:
        receipt = await state.intake.accept(
            answer.batch_id, answer.task_index, answer.worker, base64.b64decode(answer.payload),
            bytes.fromhex(answer.signature[2:]),
            bytes.fromhex(answer.answer_digest[2:]) if answer.answer_digest else None)
    except RelayError as exc:
        state.metrics.answers[exc.code] += 1
        retry = exc.extra.get("retry_after")
        return exc.status_code, exc.body(), {"retry-after": str(max(1, round(retry)))} if retry else None
    state.metrics.answers["accepted"] += 1
    return 202, receipt, None


@router.post("", status_code=202, response_model=Receipt,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": AnswerPost.model_json_schema()}}}},
             responses=error_responses(400, 401, 404, 409, 410, 413, 422, 429, 503, duplicate=True))
async def post_answer(request: Request) -> JSONResponse:
    """Verify the signature, check the batch and task, store answer and payload durably, acknowledge.

    400: the signature is malformed or the digest does not match the payload; 401: the signature
    is valid but made by someone other than `worker`; 409: this worker already answered this task
    (the body carries the original receipt); 413: payload over 256 KiB; 429: over the worker's rate.
    """
    status, body, headers = await answer_response(request.app.state.relay, await request.body())
    return JSONResponse(body, status_code=status, headers=headers)


class _Route:
    path = "/answers"  # the metrics label of requests served by the fast path


class AnswerFastPath:
    """Serves POST /answers straight from the ASGI scope; every other request goes to FastAPI."""

    def __init__(self, app: ASGIApp, state: RelayState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/answers" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        scope["route"] = _Route
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        status, body, headers = await answer_response(self.state, b"".join(chunks))
        content = json.dumps(body).encode()
        raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
        raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": content})
