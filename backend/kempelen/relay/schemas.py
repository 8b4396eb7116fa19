"""Request and response bodies shared by several routes (OpenAPI components)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

Address = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{40}$", examples=["0x70997970C51812dc3A010C7d01b50e0d17dc79C8"])]
Hex32 = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$")]
ReceiptId = Annotated[str, Field(pattern=r"^0x[0-9a-fA-F]{64}$",
                                 description="0x hex of the EIP-712 digest the worker signed")]


class ErrorBody(BaseModel):
    error: str = Field(description="stable machine-readable code, e.g. bad_signature")
    detail: str = Field(description="what is wrong, for people")


class Receipt(BaseModel):
    receipt_id: ReceiptId
    status: str = Field(description="accepted | submitted | onchain | skipped | approved | rejected "
                                    "| released | paid; held | settled in settlement-mode batches (held also "
                                    "while the escrow skips the answer as SettlementSealed: the relay opens "
                                    "its worker's settled words, then sends it again)")
    batch_id: int
    task_index: int
    worker: Address
    answer_digest: Hex32
    payload_cid: str
    accepted_at: str


class DuplicateBody(ErrorBody):
    receipt: Receipt = Field(description="the original answer's receipt")


def error_responses(*codes: int, duplicate: bool = False) -> dict:
    """OpenAPI documentation of the error statuses a route answers with."""
    return {code: {"model": DuplicateBody if code == 409 and duplicate else ErrorBody} for code in codes}
