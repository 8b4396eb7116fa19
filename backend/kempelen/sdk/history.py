"""A batch's answers as the chain records them, folded from the escrow's events."""

from __future__ import annotations

from dataclasses import dataclass, replace

from kempelen.chain import artifacts
from kempelen.chain.contracts import Chain
from kempelen.protocol.cid import CID, raw_cid
from kempelen.protocol.events import (
    REVIEW_OUTCOMES,
    EventDecoder,
    reviewed_tasks,
    submitted_answers,
)


@dataclass(frozen=True)
class AnswerRecord:
    batch_id: int
    worker: str
    task_index: int
    answer_cid: str
    status: str  # pending | approved | rejected | released
    relayer: str
    submitted_tx: str
    reason_cid: str | None = None


def batch_answers(chain: Chain, batch_id: int) -> list[AnswerRecord]:
    """Every answer ever accepted for `batch_id`, in submission order, with its latest status."""
    decoder = EventDecoder(artifacts.load("TaskEscrow").abi)
    names = ("AnswersSubmitted", *REVIEW_OUTCOMES)
    logs = chain.w3.provider.make_request("eth_getLogs", [{
        "address": chain.escrow.address,
        "fromBlock": hex(chain.deployment.deploy_block),
        "toBlock": "latest",
        "topics": [decoder.topics(*names), "0x" + batch_id.to_bytes(32, "big").hex()],
    }])
    if "error" in logs:
        raise RuntimeError(f"eth_getLogs failed: {logs['error']}")
    answers: dict[tuple[str, int], AnswerRecord] = {}
    for event in decoder.decode_all(logs["result"]):
        worker = event.args["worker"]
        if event.name == "AnswersSubmitted":
            for task, digest in submitted_answers(event.args):  # ValueError: not the escrow's shape
                answers[worker, task] = AnswerRecord(
                    batch_id=batch_id, worker=worker, task_index=task,
                    answer_cid=str(raw_cid(digest)), status="pending",
                    relayer=event.args["relayer"], submitted_tx=event.transaction_hash)
            continue
        reason = event.args.get("reasonCid")
        for task in reviewed_tasks(event.args):
            if (worker, task) in answers:
                answers[worker, task] = replace(answers[worker, task], status=REVIEW_OUTCOMES[event.name],
                                                reason_cid=str(CID.from_bytes(reason)) if reason else None)
    return list(answers.values())
