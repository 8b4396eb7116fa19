"""A batch's answers as the chain records them, folded from the escrow's events."""

from __future__ import annotations

from dataclasses import dataclass, replace

from kempelen.chain import artifacts
from kempelen.chain.contracts import Chain
from kempelen.protocol.cid import CID, raw_cid
from kempelen.protocol.events import EventDecoder

_STATUS_OF_EVENT = {"AnswerApproved": "approved", "AnswerRejected": "rejected", "AnswerReleased": "released"}


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
    names = ("AnswerSubmitted", *_STATUS_OF_EVENT)
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
        key = (event.args["worker"], event.args["taskIndex"])
        if event.name == "AnswerSubmitted":
            answers[key] = AnswerRecord(
                batch_id=batch_id, worker=key[0], task_index=key[1],
                answer_cid=str(raw_cid(event.args["answerDigest"])), status="pending",
                relayer=event.args["relayer"], submitted_tx=event.transaction_hash)
        elif key in answers:
            reason = event.args.get("reasonCid")
            answers[key] = replace(answers[key], status=_STATUS_OF_EVENT[event.name],
                                   reason_cid=str(CID.from_bytes(reason)) if reason else None)
    return list(answers.values())
