"""Pure reading of a mined submitAnswers receipt: what happened to each answer of its pack."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from kempelen.chain import artifacts
from kempelen.protocol.events import Event, EventDecoder, submitted_answers

log = logging.getLogger("kempelen.relay.submitter")

# ITaskEscrow.SkipReason, by value.
SKIP_REASONS = (
    "UnknownBatch", "PastDeadline", "TaskOutOfRange", "BadSignature", "WorkerBlocked",
    "ReputationTooLow", "AlreadyAnswered", "TaskFull", "InsufficientFunds", "SettlementSealed",
)
ALREADY_ANSWERED = "AlreadyAnswered"
# The worker has settled answers in the batch whose words are still sealed (ISettlement): not a
# final fate. The relay opens the words (openSettled) and sends the answer again.
SETTLEMENT_SEALED = "SettlementSealed"


@dataclass(frozen=True)
class AnswerOutcome:
    """One answer's fate in a mined transaction.

    status: "onchain" (an AnswersSubmitted event names it), "skipped" (AnswerSkipped, with its
    reason) or "missing" (no event names it: the transaction did not carry it, or reverted).
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
    """Match the escrow's AnswersSubmitted/AnswerSkipped events of one receipt to the pack.

    `pack` holds (answer id, (batch id, worker, task index)); events from other contracts
    (a token, a look-alike) are ignored, so only the escrow can vouch for an answer. One
    AnswersSubmitted names several answers of a worker (its task bitmap and digests); it is
    logged when its group closes, so after skips of later answers: an acceptance of a key
    outranks a skip of it whatever the log order.
    """
    seen: dict[tuple[int, str, int], AnswerOutcome] = {}
    escrow = escrow.lower()
    for event in events:
        if event.address.lower() != escrow:
            continue
        if event.name == "AnswersSubmitted":
            try:
                answers = submitted_answers(event.args)
            except ValueError as exc:  # not the escrow's shape: vouches for nothing, state decides
                log.error("ignoring malformed %s in %s: %s", event.name, event.transaction_hash, exc)
                continue
            batch_id, worker = event.args["batchId"], event.args["worker"].lower()
            for task_index, digest in answers:
                seen[batch_id, worker, task_index] = AnswerOutcome(0, "onchain", event.block_number,
                                                                   answer_digest=digest)
        elif event.name == "AnswerSkipped":
            key = (event.args["batchId"], event.args["worker"].lower(), event.args["taskIndex"])
            if key not in seen or seen[key].status != "onchain":
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
