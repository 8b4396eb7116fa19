"""Pure reading of a mined submitAnswers receipt: what happened to each answer of its pack."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from kempelen.chain import artifacts
from kempelen.protocol.events import Event, EventDecoder

# ITaskEscrow.SkipReason, by value.
SKIP_REASONS = (
    "UnknownBatch", "PastDeadline", "TaskOutOfRange", "BadSignature", "WorkerBlocked",
    "ReputationTooLow", "AlreadyAnswered", "TaskFull", "InsufficientFunds",
)
ALREADY_ANSWERED = "AlreadyAnswered"


@dataclass(frozen=True)
class AnswerOutcome:
    """One answer's fate in a mined transaction.

    status: "onchain" (AnswerSubmitted), "skipped" (AnswerSkipped, with its reason) or
    "missing" (no event names it: the transaction did not carry it, or reverted).
    """

    answer_id: int
    status: str
    block_number: int | None = None
    skip_reason: str | None = None
    answer_digest: bytes | None = None
    tx_hash: str | None = None  # set when another transaction than the one read carried it


def skip_reason_name(value: int) -> str:
    return SKIP_REASONS[value] if 0 <= value < len(SKIP_REASONS) else f"SkipReason({value})"


def outcomes(pack: Sequence[tuple[int, tuple[int, str, int]]], events: Iterable[Event],
             escrow: str) -> list[AnswerOutcome]:
    """Match the escrow's AnswerSubmitted/AnswerSkipped events of one receipt to the pack.

    `pack` holds (answer id, (batch id, worker, task index)); events from other contracts
    (a token, a look-alike) are ignored, so only the escrow can vouch for an answer.
    """
    seen: dict[tuple[int, str, int], AnswerOutcome] = {}
    escrow = escrow.lower()
    for event in events:
        if event.address.lower() != escrow or event.name not in ("AnswerSubmitted", "AnswerSkipped"):
            continue
        key = (event.args["batchId"], event.args["worker"].lower(), event.args["taskIndex"])
        if event.name == "AnswerSubmitted":
            seen[key] = AnswerOutcome(0, "onchain", event.block_number,
                                      answer_digest=event.args["answerDigest"])
        else:
            seen[key] = AnswerOutcome(0, "skipped", event.block_number,
                                      skip_reason=skip_reason_name(event.args["reason"]))
    result = []
    for answer_id, (batch_id, worker, task_index) in pack:
        found = seen.get((batch_id, worker.lower(), task_index))
        if found is None:
            result.append(AnswerOutcome(answer_id, "missing"))
        else:
            result.append(AnswerOutcome(answer_id, found.status, found.block_number,
                                        found.skip_reason, found.answer_digest))
    return result


@cache
def escrow_decoder() -> EventDecoder:
    """Decoder of the escrow's events (the artifact is read once per process)."""
    return EventDecoder(artifacts.load("TaskEscrow").abi)
