"""POST /answers: a worker's signed answer with its payload; 202 only once both are committed."""

from __future__ import annotations

import base64
import binascii

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kempelen.relay.api.deps import StateDep
from kempelen.relay.schemas import Address, Hex32, Receipt, error_responses

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


@router.post("", status_code=202, response_model=Receipt,
             responses=error_responses(400, 401, 404, 409, 410, 413, 429, 503, duplicate=True))
async def post_answer(answer: AnswerPost, state: StateDep) -> JSONResponse:
    """Verify the signature, check the batch and task, store answer and payload durably, acknowledge.

    400: the signature is malformed or the digest does not match the payload; 401: the signature
    is valid but made by someone other than `worker`; 409: this worker already answered this task
    (the body carries the original receipt).
    """
    receipt = await state.intake.accept(
        answer.batch_id, answer.task_index, answer.worker, base64.b64decode(answer.payload),
        bytes.fromhex(answer.signature[2:]),
        bytes.fromhex(answer.answer_digest[2:]) if answer.answer_digest else None)
    state.metrics.answers["accepted"] += 1
    return JSONResponse(receipt, status_code=202)
