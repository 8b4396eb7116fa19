"""Signed answers: what a worker produces, and the direct on-chain path that needs no relay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from kempelen.chain.contracts import Chain
from kempelen.protocol.cid import raw_cid
from kempelen.protocol.manifest import canonical_json
from kempelen.protocol.signing import Answer, Domain, answer_digest, sign
from kempelen.sdk.keys import Signer

MAX_ANSWER_BYTES = 262_144  # one IPFS block: the answer's CID is then CIDv1 raw of its sha256


@dataclass(frozen=True)
class SignedAnswer:
    answer: Answer
    signature: bytes
    payload: bytes

    @property
    def cid(self) -> str:
        return str(raw_cid(self.answer.answer_digest))


def answer_payload(value: object) -> bytes:
    """The bytes a worker signs for an answer: canonical JSON unless already bytes."""
    payload = value if isinstance(value, bytes) else canonical_json(value)
    if len(payload) > MAX_ANSWER_BYTES:
        raise ValueError(f"answer is {len(payload)} bytes; at most {MAX_ANSWER_BYTES} fit one block")
    return payload


def sign_answer(domain: Domain, signer: Signer, batch_id: int, task_index: int, value: object) -> SignedAnswer:
    payload = answer_payload(value)
    answer = Answer(batch_id, task_index, answer_digest(payload), signer.address)
    return SignedAnswer(answer, sign(domain.digest(answer.struct_hash()), signer.private_key), payload)


def submit_direct(chain: Chain, submitter: Signer, answers: Sequence[SignedAnswer]):
    """Put signed answers on-chain without a relay; the submitter pays gas and earns the relay fee."""
    call = chain.escrow.functions.submitAnswers([a.answer.as_tuple() for a in answers],
                                                [a.signature for a in answers])
    return chain.transact(submitter.private_key, call)
